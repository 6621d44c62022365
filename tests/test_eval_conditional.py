"""Conditional code length (components/evaluation/conditional_code_length.py) against a brute-force sum.

The brute force recomputes, position by position and in plain Python, the expander cross-entropy of every
token of every level and the top LM cross-entropy of every top row, decides which segments the receiver knows
from explicit loops over the segmentations, and sums what must be sent. Cuts are chosen so that some fall
inside a segment (the straddling case) at every level.
"""

from __future__ import annotations

import math

import pytest
import torch

from components.evaluation.conditional_code_length import ScoringWindow, conditional_bits_of_batch
from model import build_model
from model.tokenizer import BOS_ID
from tests.model_helpers import real_text, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)

TEXT = real_text()[:90]


@pytest.fixture(scope="module", params=[(1, 1), (2, 1), (2, 2)], ids=["1level", "2levels", "2levels-2queries"])
def model(request):
    levels, queries = request.param
    config = tiny_config(num_levels=levels, level_changes={"num_queries": queries, "max_segment_len": 5})
    return build_model(config).eval()


@torch.no_grad()
def brute_force_bits(model, context: bytes, target: bytes) -> tuple[float, list[bool]]:
    """bits(target | context) from first principles; also, per level, whether a segment straddles the cut."""
    tokens = torch.tensor([[BOS_ID, *context, *target]])
    compressed = model.compress(tokens)
    logits = model.reconstruction_logits(compressed)
    known = 1 + len(context)
    total, straddles = 0.0, []
    for level, out in enumerate(compressed.levels):
        level_tokens = out.tokens[0].tolist()
        real = (~out.key_padding_mask[0]).tolist()
        segments = out.segment_ids[0].tolist()
        log_probs = torch.log_softmax(logits[level][0].double(), dim=-1)
        for position, token in enumerate(level_tokens):
            if real[position] and position >= known:
                total -= float(log_probs[position, token]) / math.log(2)
        unknown_segments = [segments[p] for p in range(len(segments)) if real[p] and p >= known]
        first_unknown = min(unknown_segments) if unknown_segments else max(segments) + 1
        straddles.append(any(real[p] and p < known and segments[p] == first_unknown for p in range(len(segments))))
        known = first_unknown * model.compressors[level].num_queries
    top = compressed.levels[-1]
    quantizer = model.compressors[-1].quantizer
    vectors = quantizer.lookup(top.codes) * top.row_valid[..., None]
    predictions = model.top_lm.predict(vectors, top.row_valid)
    code_log_probs = torch.log_softmax(model.top_lm.code_logits(predictions, quantizer.codebook)[0].double(), -1)
    for row, code in enumerate(top.codes[0].tolist()):
        if top.row_valid[0, row] and row >= known:
            total -= float(code_log_probs[row, code]) / math.log(2)
    return total, straddles


def test_conditional_bits_match_brute_force_with_cuts_inside_segments(model) -> None:
    cuts = list(range(0, len(TEXT), 7))
    windows = [ScoringWindow(TEXT[:cut], TEXT[cut:]) for cut in cuts]
    got = conditional_bits_of_batch(model, windows, torch.device("cpu"))  # one padded batch of varied lengths
    straddled = [False] * model.num_levels
    for cut, value in zip(cuts, got, strict=True):
        expected, straddles = brute_force_bits(model, TEXT[:cut], TEXT[cut:])
        assert value == pytest.approx(expected, rel=1e-4, abs=1e-3), f"cut at {cut}"
        straddled = [a or b for a, b in zip(straddled, straddles, strict=True)]
    assert all(straddled), "the cuts must include contexts that end inside a segment at every level"


def test_known_segment_codes_do_not_depend_on_the_continuation(model) -> None:
    """What the receiver is assumed to know, it can compute from the context alone (causal segmentation and
    pooling): the codes of closed context segments are the same with or without the continuation."""
    cut = 40
    alone = model.compress(torch.tensor([[BOS_ID, *TEXT[:cut]]]))
    joint = model.compress(torch.tensor([[BOS_ID, *TEXT]]))
    known_tokens = 1 + cut
    for level, (a, j) in enumerate(zip(alone.levels, joint.levels, strict=True)):
        segments = j.segment_ids[0]
        later = segments[known_tokens:]
        later = later[later >= 0]
        first_unknown = int(later[0]) if len(later) else int(segments.max()) + 1
        rows = first_unknown * model.compressors[level].num_queries
        assert torch.equal(a.segment_ids[0, :known_tokens], segments[:known_tokens])
        assert torch.equal(a.codes[0, :rows], j.codes[0, :rows]), f"level {level}"
        known_tokens = rows


def test_one_byte_continuations_form_a_sub_probability(model) -> None:
    """A real code given the context: summed over all 256 possible next bytes, 2^-bits is at most 1."""
    context = TEXT[:33]
    windows = [ScoringWindow(context, bytes([b])) for b in range(256)]
    bits = torch.tensor(conditional_bits_of_batch(model, windows, torch.device("cpu")), dtype=torch.float64)
    total = float((2.0**-bits).sum())
    assert 0.0 < total <= 1.0 + 1e-6


def test_empty_context_costs_the_whole_code_except_the_given_bos(model) -> None:
    tokens = torch.tensor([[BOS_ID, *TEXT]])
    full = float(model.code_length_bits(tokens)[0])
    conditional = conditional_bits_of_batch(model, [ScoringWindow(b"", TEXT)], torch.device("cpu"))[0]
    compressed = model.compress(tokens)
    logits = model.reconstruction_logits(compressed)[0][0]
    bos_expander_bits = -float(torch.log_softmax(logits[0].double(), -1)[BOS_ID]) / math.log(2)
    assert conditional == pytest.approx(full - bos_expander_bits, rel=1e-5)


def test_the_code_length_is_not_prefix_consistent_so_differences_would_be_wrong(model) -> None:
    """Why P(cont|ctx) is not 2^-(L(ctx+cont) - L(ctx)): the context coded alone ends in a different segment."""
    differences = []
    for cut in range(3, 60, 5):
        joint = float(model.code_length_bits(torch.tensor([[BOS_ID, *TEXT[: cut + 8]]]))[0])
        alone = float(model.code_length_bits(torch.tensor([[BOS_ID, *TEXT[:cut]]]))[0])
        conditional = conditional_bits_of_batch(
            model, [ScoringWindow(TEXT[:cut], TEXT[cut : cut + 8])], torch.device("cpu")
        )[0]
        differences.append(abs((joint - alone) - conditional))
    assert max(differences) > 0.1
