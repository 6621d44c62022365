"""Attention: block-local sliding window == dense reference, no NaN under padding, O(S*window) memory,
segment-aligned cross-attention, KV-cache steps == full forward."""

import pytest
import torch
import torch.nn.functional as F

from model import attention
from model.attention import (
    ROPE_BASE,
    KeyValueCache,
    apply_rope,
    block_local_attention,
    dense_sliding_window_attention,
    rope_angles,
    rotate,
    segment_cross_attention,
    segment_cross_attention_step,
    segment_step_reads,
    sliding_window_attention,
)
from model.blocks import TransformerBlock

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


def qkv(B=2, H=2, S=37, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, S, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize("S,window", [(37, 8), (16, 8), (5, 8), (64, 1), (33, 32)])
def test_block_local_matches_dense_reference(S, window):
    q, k, v = qkv(S=S)
    kpm = torch.zeros(2, S, dtype=torch.bool)
    kpm[1, S // 2 :] = True  # right padding on one row
    for mask in (None, kpm):
        expected = dense_sliding_window_attention(q, k, v, window, mask)
        got = block_local_attention(q, k, v, window, mask)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_window_semantics_position_sees_exactly_window_plus_one_keys():
    S, window = 20, 4
    q = torch.zeros(1, 1, S, 4)  # equal scores: output = mean of visible values
    k = torch.zeros(1, 1, S, 4)
    v = torch.arange(S, dtype=torch.float32).view(1, 1, S, 1).expand(1, 1, S, 4).contiguous()
    out = block_local_attention(q, k, v, window, None)[0, 0, :, 0]
    expected = torch.tensor([sum(range(max(0, t - window), t + 1)) / (t + 1 - max(0, t - window)) for t in range(S)])
    torch.testing.assert_close(out, expected)


def test_fully_padded_window_gives_zeros_not_nan():
    q, k, v = qkv(S=40)
    for t in (q, k, v):
        t.requires_grad_(True)
    kpm = torch.zeros(2, 40, dtype=torch.bool)
    kpm[:, 12:] = True  # 28 trailing pads, window 8: whole windows of padding
    out = block_local_attention(q, k, v, 8, kpm)
    assert torch.isfinite(out).all()
    assert (out[:, :, 12:] == 0).all()
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_memory_grows_with_window_not_sequence_squared(monkeypatch):
    seen = []
    original = F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kwargs):
        seen.append(attn_mask.numel() if attn_mask is not None else 0)
        seen.append(q.shape[-2] * k.shape[-2] * q.shape[:-2].numel())
        return original(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", recording)
    B, H, S, W = 1, 2, 1024, 16
    q, k, v = qkv(B=B, H=H, S=S)
    sliding_window_attention(q, k, v, W, torch.zeros(B, S, dtype=torch.bool))
    assert max(seen) <= B * H * S * 2 * W  # scores and mask: O(S * window), far below S^2 = 1M per head


def test_rope_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)

    def score(pq, pk):
        return (apply_rope(q, torch.tensor([pq])) * apply_rope(k, torch.tensor([pk]))).sum()

    torch.testing.assert_close(score(5, 2), score(105, 102))
    assert not torch.allclose(score(5, 2), score(5, 4))


def test_segment_cross_attention_matches_masked_dense_reference():
    g = torch.Generator().manual_seed(2)
    B, H, S, d, L, lookback = 2, 2, 12, 4, 2, 1
    segments = torch.tensor([[0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 4, 4], [0, 1, 1, 1, 2, 2, -1, -1, -1, -1, -1, -1]])
    M = 5 * L
    q = torch.randn(B, H, S, d, generator=g)
    k, v = torch.randn(B, H, M, d, generator=g), torch.randn(B, H, M, d, generator=g)
    row_valid = torch.ones(B, M, dtype=torch.bool)
    row_valid[1, 3 * L :] = False
    got = segment_cross_attention(q, k, v, segments, row_valid, lookback, L)

    row_segment = torch.arange(M) // L
    delta = segments[:, :, None] - row_segment[None, None, :]
    allowed = (delta >= 0) & (delta <= lookback) & row_valid[:, None, :] & (segments >= 0)[..., None]
    scores = (q @ k.transpose(-1, -2)) * d**-0.5
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    weights = torch.softmax(scores, -1).nan_to_num(0.0)
    torch.testing.assert_close(got, weights @ v)
    assert (got[1, :, 6:] == 0).all()  # padding queries read nothing


@pytest.mark.parametrize("lookback,rows_per_segment,memory_segments", [(1, 1, 2), (2, 3, 3), (2, 2, 1), (3, 1, 4)])
def test_a_decoding_step_reads_the_rows_the_whole_sequence_path_reads_to_the_bit(
    lookback, rows_per_segment, memory_segments
):
    """The step path (slots from a table per shape, the angles computed once per step) must give exactly the
    floats of `segment_cross_attention`: the codec's files decode only if every distribution is bit-identical."""
    g = torch.Generator().manual_seed(3)
    B, H, d, L = 6, 2, 8, rows_per_segment
    M = memory_segments * L
    q, k, v = (torch.randn(B, H, n, d, generator=g) for n in (1, M, M))
    local = torch.randint(0, min(lookback, memory_segments - 1) + 1, (B,), generator=g)  # its own segment is held
    reads = segment_step_reads(local, M, lookback, L, d)
    q_rotated = apply_rope(q, local[:, None])
    k_rotated = apply_rope(k, torch.arange(M) // L)
    whole = segment_cross_attention(
        q_rotated, k_rotated, v, local[:, None], torch.ones(B, M, dtype=torch.bool), lookback, L
    )
    assert torch.equal(rotate(q, *reads.query_rope), q_rotated)
    assert torch.equal(rotate(k, *reads.memory_rope), k_rotated)
    assert torch.equal(segment_cross_attention_step(q_rotated, k_rotated, v, reads), whole)


def test_queries_and_keys_rotated_together_are_rotated_exactly_as_apart():
    g = torch.Generator().manual_seed(4)
    for d in (8, 7):  # an odd head dim leaves its last channel alone
        q, k = torch.randn(2, 3, 2, 5, d, generator=g)
        cos, sin = rope_angles(torch.arange(5), d, "cpu")
        together = rotate(torch.stack([q, k]), cos, sin)
        assert torch.equal(together[0], rotate(q, cos, sin)) and torch.equal(together[1], rotate(k, cos, sin))
        assert torch.equal(rotate(q, cos, sin)[..., d // 2 * 2 :], q[..., d // 2 * 2 :])


def test_rotation_gives_the_floats_of_the_pairwise_formula():
    """`rotate`'s table form is the textbook rotation bit for bit (what checkpoints were trained with and what
    codec files were coded with): (x1 cos - x2 sin, x1 sin + x2 cos) over channel pairs (i, i + d/2)."""
    g = torch.Generator().manual_seed(5)
    for d in (32, 7, 1):  # head dim 1: nothing to rotate
        half = d // 2
        x = torch.randn(3, 4, 9, d, generator=g) * 50
        positions = torch.randint(0, 5000, (3, 9), generator=g)
        angles = positions.float()[..., None] * ROPE_BASE ** (-torch.arange(0, half, dtype=torch.float32) / half)
        cos, sin = angles.cos()[:, None], angles.sin()[:, None]
        x1, x2 = x[..., :half], x[..., half : 2 * half]
        expected = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, x[..., 2 * half :]], dim=-1)
        assert torch.equal(rotate(x, *rope_angles(positions, d, "cpu")), expected)


def test_kv_cache_steps_match_full_forward():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, window=3, ffn_multiplier=2).eval()
    x = torch.randn(2, 11, 16)
    full = block(x)
    cache = KeyValueCache(window=3)
    steps = torch.cat([block.step(x[:, t : t + 1], cache) for t in range(11)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_mask_and_scale_match_block_local_in_eager_mode(monkeypatch):
    """The FlexAttention path's mask_mod and scale, checked on CPU with the unfused (eager) kernel."""
    from torch.nn.attention.flex_attention import flex_attention

    monkeypatch.setitem(attention._FLEX, "kernel", flex_attention)
    q, k, v = qkv(S=150, d=8)
    kpm = torch.zeros(2, 150, dtype=torch.bool)
    kpm[1, 90:] = True
    for mask in (None, kpm):
        flex = attention.flex_sliding_window_attention(q, k, v, 32, mask)
        torch.testing.assert_close(flex, block_local_attention(q, k, v, 32, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_flex_matches_block_local_on_cuda():
    q, k, v = (t.cuda() for t in qkv(S=300, d=16))
    kpm = torch.zeros(2, 300, dtype=torch.bool, device="cuda")
    kpm[1, 200:] = True
    for mask in (None, kpm):
        block = block_local_attention(q, k, v, 64, mask)
        flex = attention.flex_sliding_window_attention(q, k, v, 64, mask)
        torch.testing.assert_close(flex, block, atol=2e-5, rtol=2e-5)


def test_causal_fast_path_matches_dense_reference_and_handles_any_padding():
    q, k, v = qkv(S=21)
    right = torch.zeros(2, 21, dtype=torch.bool)
    right[1, 15:] = True
    left = torch.zeros(2, 21, dtype=torch.bool)
    left[1, :4] = True  # not right padding: takes the masked path
    for mask in (None, right, left):
        for window in (None, 20, 30):
            expected = dense_sliding_window_attention(q, k, v, window, mask)
            torch.testing.assert_close(sliding_window_attention(q, k, v, window, mask), expected)
