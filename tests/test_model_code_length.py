"""Code length: equals the cross-entropies a causal decoder pays token by token (recomputing segment
boundaries from decoded tokens), is finite untrained, and needs a top LM."""

import math

import pytest
import torch
import torch.nn.functional as F

from model import build_model
from model.generation import LevelDecoder, TopCodeSource
from tests.model_helpers import padded_batch, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


class ScoringTopSource(TopCodeSource):
    """Emits the known codes, first paying -log2 p(code | what a decoder holds by then) under `next_logits`:
    the codes before it and, for a top LM with pooled inputs, the tokens the level below decoded so far."""

    def __init__(self, model, known: list[int]):
        super().__init__(model, known)
        self.bits = 0.0

    def next_token(self):
        if self.known:
            logits = self.next_logits()
            self.bits += float(-F.log_softmax(logits, -1)[self.known[0]]) / math.log(2)
        return super().next_token()


def decoder_bits(model, tokens: torch.Tensor) -> tuple[float, float]:
    """Replay the text through the step-wise decoders (boundaries recomputed causally); returns (level bits,
    top bits)."""
    compressed = model.compress(tokens[None])
    forced = [tokens.tolist()] + [
        c[0][v[0]].tolist() for c, v in zip(compressed.codes, compressed.row_valid, strict=False)
    ]
    top = parent = ScoringTopSource(model, forced[-1])
    decoders = []
    for level in reversed(range(model.num_levels)):
        parent = LevelDecoder(model, level, parent, forced[level])
        decoders.append(parent)
    bottom = decoders[-1]
    for _ in range(len(forced[0])):
        assert bottom.next_token() is not None
    for level, decoder in zip(reversed(range(model.num_levels)), decoders, strict=False):
        assert len(decoder.token_nats) == len(forced[level]), "every token of every level was decoded once"
    assert not top.known, "every top code was read"
    levels = sum(sum(d.token_nats) for d in decoders) / math.log(2)
    return levels, top.bits


def sharpen_entropy_models(model, scale: float = 40.0):
    """An untrained entropy model predicts nearly uniform bytes, so every boundary would come from
    max_segment_len and a non-causal entropy could not be told from a causal one. Scaling the LM heads up makes
    the next-token entropy vary from position to position (set by construction, no training needed)."""
    with torch.no_grad():
        for compressor in model.compressors:
            compressor.lm_head.weight.mul_(scale)
    return model


def entropy_boundaries(model, tokens, kpm) -> int:
    """Segments of the bottom level that were cut by the entropy rule, not by max_segment_len."""
    out = model.compress(tokens, kpm).levels[0]
    bound = model.compressors[0].segmenter.max_segment_len
    lengths = [torch.bincount(row[row >= 0]) for row in out.segment_ids]
    return sum(int((length[:-1] < bound).sum()) for length in lengths)


@pytest.mark.parametrize("top", ["discrete", "pooled", "lm_state", "top_state"])
@pytest.mark.parametrize("num_levels,num_queries", [(1, 1), (1, 2), (2, 1)])
def test_code_length_equals_stepwise_decoder_cross_entropies(num_levels, num_queries, top):
    """ "lm_state": a discrete top LM, and expanders that read their compressor's entropy-model state.
    "top_state": a top LM reading pooled vectors, and a top expander that reads its state (reading it one
    segment late would read that segment's own pooled vector, which changes the numbers)."""
    changes = dict(num_queries=num_queries, entropy_delta=0.05, max_segment_len=5)
    reads_lm_state, reads_top_state = top == "lm_state", top == "top_state"
    config = tiny_config(
        num_levels,
        top={"lm_state": "discrete", "top_state": "pooled"}.get(top, top),
        level_changes=changes,
        expander_reads_lm_state=reads_lm_state,
        expander_reads_top_state=reads_top_state,
    )
    model = build_model(config).eval()
    sharpen_entropy_models(model)
    if reads_lm_state:  # at init the projection barely moves the expanders: make it count
        with torch.no_grad():
            for expander in model.expanders:
                expander.lm_state_proj.weight.mul_(50.0)
    if reads_top_state:  # likewise the top LM's state, and the pooled vectors it reads
        with torch.no_grad():
            model.expanders[-1].top_state_proj.weight.mul_(50.0)
            model.top_lm.pooled_proj.weight.mul_(50.0)
    if top == "pooled":  # at init (std 0.02) the pooled vectors barely move the predictions: make them count
        with torch.no_grad():
            model.top_lm.pooled_proj.weight.mul_(50.0)
            model.top_lm.log_inverse_temperature.fill_(3.0)  # and a top distribution sharp enough to show it
    texts = [b"The keeper wrote in his notebook.", b"Tides follow the moon; twice a day."]
    tokens, kpm = padded_batch(texts)
    assert entropy_boundaries(model, tokens, kpm) >= 4, "the entropy rule must place boundaries here"
    bits = model.code_length_bits(tokens, kpm)
    assert bits.shape == (2,) and torch.isfinite(bits).all()
    for row, _text in enumerate(texts):
        level_bits, top_bits = decoder_bits(model, tokens[row][~kpm[row]])
        torch.testing.assert_close(bits[row], torch.tensor(level_bits + top_bits), rtol=1e-4, atol=1e-3)


def test_untrained_code_length_is_finite_and_near_uniform_cost():
    model = build_model(tiny_config())
    tokens, kpm = padded_batch([b"hello world"] * 2)
    bits = model.code_length_bits(tokens, kpm)
    assert torch.isfinite(bits).all()
    n = int((~kpm[0]).sum())
    assert 0.8 * n * math.log2(259) < float(bits[0]) < 3 * n * math.log2(259)
    assert model.training  # the mode is restored


def test_code_length_leaves_quantizer_state_untouched():
    model = build_model(tiny_config()).train()
    before = {k: v.clone() for k, v in model.compressors.state_dict().items()}
    tokens, kpm = padded_batch([b"abc abc abc"])
    model.code_length_bits(tokens, kpm)
    for k, v in model.compressors.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_code_length_needs_a_top_lm():
    tokens, kpm = padded_batch([b"abc"])
    with pytest.raises(ValueError, match="only a top LM gives"):
        build_model(tiny_config(top=None)).code_length_bits(tokens, kpm)
