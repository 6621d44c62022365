"""Entropy segmentation: the delta and absolute rules, min/max lengths, padding, and that the whole-sequence
rule equals the left-to-right decoder rule (so boundaries can be recomputed causally)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.segmentation import EntropySegmenter, RowsSegmentation, SegmentationState, predictive_entropy

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


def seg(entropies, pad=None, **kwargs):
    segmenter = EntropySegmenter(**{"entropy_delta": 0.2, **kwargs})
    ent = torch.tensor([entropies], dtype=torch.float32)
    kpm = None if pad is None else torch.tensor([pad])
    return segmenter.segment(ent, kpm)[0].tolist()


def test_delta_rule_opens_where_entropy_rises_by_more_than_delta():
    # position 0 opens; position 1 never compares (position 0 has no entropy); rises > 0.2 open at 3 and 5
    assert seg([0.0, 2.0, 1.0, 1.5, 1.6, 1.9, 1.0]) == [0, 0, 0, 1, 1, 2, 2]
    assert seg([0.0, 2.0, 1.0, 1.5, 1.6, 1.9, 1.0], entropy_delta=0.45) == [0, 0, 0, 1, 1, 1, 1]
    assert seg([0.0, 1.0, 1.1, 1.2, 1.3], entropy_delta=0.0) == [0, 0, 1, 2, 3]


def test_absolute_threshold_opens_high_entropy_positions():
    ent = [0.0, 3.0, 2.9, 2.8, 0.5, 0.4]
    assert seg(ent, entropy_delta=10.0) == [0, 0, 0, 0, 0, 0]
    assert seg(ent, entropy_delta=10.0, entropy_abs_threshold=2.85) == [0, 1, 2, 2, 2, 2]


def test_min_and_max_segment_length():
    rising = [0.0] + [float(i) for i in range(1, 10)]  # every position from 2 on wants a boundary
    assert seg(rising) == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert seg(rising, min_segment_len=3) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    flat = [1.0] * 10
    assert seg(flat, max_segment_len=4) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert seg(rising, min_segment_len=2, max_segment_len=3) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_padding_never_opens_joins_or_validates_a_segment():
    ent = [0.0, 0.1, 5.0, 0.1, 9.0, 0.0, 9.0]
    pad = [False, False, False, False, True, True, True]
    ids = seg(ent, pad, entropy_abs_threshold=1.0, max_segment_len=2)
    assert ids[4:] == [-1, -1, -1]
    assert ids[:4] == [0, 0, 1, 1]
    assert max(ids) + 1 == 2  # two segments: the padding adds none
    assert seg([1.0] * 4, [True] * 4) == [-1, -1, -1, -1]


def decode_rule(segmenter, entropies):
    state, ids = SegmentationState(), []
    for t, e in enumerate(entropies):
        segmenter.step(state, None if t == 0 else e)
        ids.append(state.num_segments - 1)
    return ids


@settings(max_examples=150, deadline=None)
@given(
    entropies=st.lists(st.floats(0.0, 4.0, width=32), min_size=1, max_size=30),
    delta=st.floats(0.0, 1.0),
    threshold=st.one_of(st.none(), st.floats(0.5, 4.0)),
    min_len=st.integers(1, 4),
    extra=st.one_of(st.none(), st.integers(0, 4)),
    padding=st.integers(0, 5),
)
def test_whole_sequence_rule_equals_left_to_right_decoder_rule(entropies, delta, threshold, min_len, extra, padding):
    max_len = None if extra is None else min_len + extra
    segmenter = EntropySegmenter(delta, threshold, min_len, max_len)
    padded = torch.tensor([entropies + [9.0] * padding])  # right padding with entropies that would want a cut
    kpm = torch.arange(padded.shape[1])[None] >= len(entropies)
    whole = segmenter.segment(padded, kpm)[0].tolist()
    assert whole == decode_rule(segmenter, entropies) + [-1] * padding


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(st.lists(st.floats(0.0, 4.0, width=32), min_size=1, max_size=20), min_size=1, max_size=4),
    delta=st.floats(0.0, 1.0),
    threshold=st.one_of(st.none(), st.floats(0.5, 4.0)),
    min_len=st.integers(1, 4),
    extra=st.one_of(st.none(), st.integers(0, 4)),
)
def test_rows_segmentation_equals_the_whole_sequence_rule_per_row(rows, delta, threshold, min_len, extra):
    """Lockstep decoding's segmentation: rows of different lengths stepped together, each as if alone."""
    segmenter = EntropySegmenter(delta, threshold, min_len, None if extra is None else min_len + extra)
    state, ids = RowsSegmentation(segmenter, len(rows)), [[] for _ in rows]
    for t in range(max(len(entropies) for entropies in rows)):
        active = [row for row, entropies in enumerate(rows) if t < len(entropies)]
        index = torch.tensor(active)
        for row, segment in zip(active, state.step(index).tolist(), strict=True):
            ids[row].append(segment)
        state.set_entropy(index, torch.tensor([rows[row][t + 1] if t + 1 < len(rows[row]) else 0.0 for row in active]))
    for row, entropies in enumerate(rows):
        assert ids[row] == segmenter.segment(torch.tensor([entropies]))[0].tolist()


def test_predictive_entropy_is_shifted_so_position_t_uses_logits_t_minus_1():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0] = torch.tensor([10.0, 0.0, 0.0, 0.0])  # confident prediction of token 1
    ent = predictive_entropy(logits)
    assert ent[0, 0] == 0
    assert ent[0, 1] < 0.01
    torch.testing.assert_close(ent[0, 2], torch.log(torch.tensor(4.0)))


def test_rows_of_a_batch_are_segmented_independently():
    g = torch.Generator().manual_seed(0)
    segmenter = EntropySegmenter(0.1, 2.5, min_segment_len=2, max_segment_len=5)
    entropy = torch.rand(4, 40, generator=g) * 3
    kpm = torch.arange(40)[None] >= torch.tensor([[40], [31], [7], [0]])
    batch = segmenter.segment(entropy, kpm)
    for row in range(4):
        alone = segmenter.segment(entropy[row : row + 1], kpm[row : row + 1])
        assert torch.equal(batch[row], alone[0])
    assert (batch[3] == -1).all() and batch[0].max() >= 7
