"""Segment pooling: equals per-segment attention computed naively; padding and empty slots give nothing."""

import pytest
import torch

from model.pooling import SegmentPooler

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


def naive_pool(pooler, hidden, segment_ids):
    """Loop over segments: L queries attend over that segment's positions only."""
    B, S, D = hidden.shape
    L, h = pooler.num_queries, pooler.heads
    d = D // h
    k, v = pooler.kv(pooler.norm(hidden)).view(B, S, 2, h, d).unbind(2)
    q = pooler.queries.view(L, h, d)
    N = int(segment_ids.max()) + 1
    out = torch.zeros(B, N, L, D)
    for b in range(B):
        for s in range(int(segment_ids[b].max()) + 1):
            pos = (segment_ids[b] == s).nonzero().squeeze(1)
            scores = torch.einsum("shd,lhd->lhs", k[b, pos], q) * d**-0.5
            w = torch.softmax(scores, -1)
            out[b, s] = torch.einsum("lhs,shd->lhd", w, v[b, pos]).reshape(L, D)
    pooled = pooler.out(out.reshape(B, N * L, D))
    return pooled / pooled.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()  # RMS-normalised rows


def test_pooler_equals_naive_per_segment_attention_and_masks_empty_slots():
    torch.manual_seed(0)
    pooler = SegmentPooler(dim=16, heads=2, num_queries=2)
    hidden = torch.randn(2, 9, 16)
    segment_ids = torch.tensor([[0, 0, 1, 1, 1, 2, 3, 3, 3], [0, 0, 0, 1, 1, -1, -1, -1, -1]])
    pooled, valid = pooler(hidden, segment_ids)
    assert pooled.shape == (2, 4 * 2, 16)
    assert valid.tolist() == [[True] * 8, [True] * 4 + [False] * 4]
    expected = naive_pool(pooler, hidden, segment_ids)
    torch.testing.assert_close(pooled[valid], expected[valid], atol=1e-5, rtol=1e-5)
    assert (pooled[~valid] == 0).all()
    torch.testing.assert_close(pooled[valid].pow(2).mean(-1), torch.ones(int(valid.sum())), atol=1e-3, rtol=0)


def test_padding_content_never_reaches_pooled_vectors():
    torch.manual_seed(0)
    pooler = SegmentPooler(dim=16, heads=2, num_queries=1)
    hidden = torch.randn(1, 8, 16)
    segment_ids = torch.tensor([[0, 0, 0, 1, 1, -1, -1, -1]])
    pooled, _ = pooler(hidden, segment_ids)
    hidden2 = hidden.clone()
    hidden2[:, 5:] = 1e6  # garbage at padded positions
    pooled2, _ = pooler(hidden2, segment_ids)
    torch.testing.assert_close(pooled, pooled2)


def test_gradient_reaches_only_the_segment_that_uses_a_position():
    torch.manual_seed(0)
    pooler = SegmentPooler(dim=8, heads=1, num_queries=1)
    hidden = torch.randn(1, 6, 8, requires_grad=True)
    pooled, _ = pooler(hidden, torch.tensor([[0, 0, 0, 1, 1, 1]]))
    pooled[0, 0].sum().backward()
    assert hidden.grad[0, :3].abs().sum() > 0
    assert (hidden.grad[0, 3:] == 0).all()
