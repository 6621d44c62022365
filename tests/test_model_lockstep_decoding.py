"""Lockstep decoding's building blocks (model/lockstep_decoding.py): ragged KV caches and the top LM's step.

Rows of a ragged cache hold different numbers of positions and step in any subset; each row must see exactly
what a cache of its own would give it (its own keys, its own RoPE position, its sliding window). The codec's
round trips and size check (tests/test_codec_roundtrip.py) test the decoder built on them end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.codec.range_coding import EncodingChannel
from components.codec.window_coder import decode_rows, encode_round, intended_symbols, known_prefixes
from model import build_model
from model.attention import KeyValueCache
from model.blocks import TransformerBlock
from model.compressor import Compressor
from model.lockstep_decoding import lockstep_chain
from model.ragged_cache import RaggedKeyValueCaches
from model.tokenizer import BOS_ID
from tests.codec_helpers import codec_config
from tests.model_helpers import real_text, tiny_config
from tests.test_model_code_length import sharpen_entropy_models


@pytest.mark.parametrize("window", [3, None])
def test_ragged_cache_rows_step_as_if_each_had_its_own_cache(window):
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, window=window, ffn_multiplier=2).eval()
    rows = 3
    x = torch.randn(rows, 12, 16)
    ragged = RaggedKeyValueCaches([window], rows)
    own = [KeyValueCache(window) for _ in range(rows)]
    fed = [0] * rows
    # Subsets in an order that leaves the rows at different positions (row 2 waits, then catches up alone).
    schedule = [[0, 1], [0], [0, 1], [1], [0, 1, 2], [2], [2], [0, 2], [2], [1, 2], [0, 1, 2], [0, 1, 2]]
    for subset in schedule:
        inputs = torch.stack([x[row, fed[row]] for row in subset])[:, None]
        got = block.step(inputs, ragged.views(torch.tensor(subset))[0])[:, 0]
        for i, row in enumerate(subset):
            expected = block.step(x[row : row + 1, fed[row]][:, None], own[row])[0, 0]
            torch.testing.assert_close(got[i], expected, atol=1e-5, rtol=1e-5)
            fed[row] += 1
    assert ragged.lengths.tolist() == fed and len(set(fed)) > 1


def test_top_lm_step_matches_predict():
    torch.manual_seed(0)
    top_lm = build_model(tiny_config()).top_lm.eval()
    vectors = torch.randn(2, 7, top_lm.in_proj.in_features)
    full = top_lm.predict(vectors, torch.ones(2, 7, dtype=torch.bool))
    caches = top_lm.new_caches()
    steps = [top_lm.step(None, caches, 2)[0]]
    steps += [top_lm.step(vectors[:, k], caches, 2)[0] for k in range(6)]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_pooled_vectors_from_the_decoders_steps_match_a_pass_over_the_decoded_tokens():
    """The top LM's pooled inputs come from the pooler inputs each step computes (not from re-running the
    trunk): for every closed segment of every row they equal `Compressor.pooled_vectors` over the row's tokens."""
    torch.manual_seed(0)
    model = build_model(codec_config(top="pooled", level_changes={"max_segment_len": 6, "entropy_delta": 0.05}))
    sharpen_entropy_models(model)
    model.eval()
    texts = [[BOS_ID, *real_text()[:40]], [BOS_ID, *real_text()[100:127]]]
    forced, top_known = known_prefixes(model, texts)
    decoder = lockstep_chain(model, forced, top_known, lambda stream, rows, logits: logits.argmax(-1).tolist())
    for position in range(len(texts[0])):
        decoder.next_tokens([row for row, text in enumerate(texts) if position < len(text)])
    compressor = model.compressors[0]
    rows, code_rows, expected = [], [], []
    for row, text in enumerate(texts):
        assert decoder.tokens[row] == text
        segments = decoder.token_segments[row]
        full = compressor.pooled_vectors(torch.tensor([text]), torch.tensor([segments]))[0]
        for segment in range(segments[-1]):  # the closed ones
            rows.append(row), code_rows.append(segment), expected.append(full[segment])
    assert len(set(code_rows)) > 3
    torch.testing.assert_close(decoder.pooled_vectors(rows, code_rows), torch.stack(expected), atol=1e-5, rtol=1e-5)


class _RecordingChannel(EncodingChannel):
    """The encoder's channel, keeping every request (stream, rows, logits) it coded."""

    def __init__(self):
        super().__init__()
        self.requests = []

    def code(self, stream, rows, logits):
        self.requests.append((stream, list(rows), logits.clone()))
        return super().code(stream, rows, logits)


@pytest.mark.parametrize(
    "changes",
    [
        dict(top="pooled", expander_reads_lm_state=True, level_changes={"max_segment_len": 6, "entropy_delta": 0.05}),
        dict(num_levels=2, level_changes={"num_queries": 2, "max_segment_len": 5, "entropy_delta": 0.05}),
    ],
)
def test_an_encoder_with_the_compressor_run_ahead_codes_the_decoders_requests(changes, monkeypatch):
    """The encoder runs level 0's compressor over the whole windows before coding (`run_ahead`), then reads those
    steps; the decoder steps it as it decodes. Every request (which stream, which rows, the logits bit for bit)
    and the words coded must be the ones the encoder makes without running ahead, and the symbols it meant to
    send are exactly the ones the decoder asked for (the codes of the decoder's own segments)."""
    torch.manual_seed(0)
    model = build_model(codec_config(**changes))
    sharpen_entropy_models(model)
    model.eval()
    text = real_text()
    windows = [[BOS_ID, *text[:47]], [*text[300:340]], [*text[600:610]]]
    known_counts = [1, 12, 9]
    knowns = [window[:known] for window, known in zip(windows, known_counts, strict=True)]
    news = [len(window) - known for window, known in zip(windows, known_counts, strict=True)]
    passes = []
    forward = Compressor.forward
    monkeypatch.setattr(Compressor, "forward", lambda self, *args: passes.append(self) or forward(self, *args))
    with torch.inference_mode():
        ahead = _RecordingChannel()
        encode_round(model, windows, known_counts, ahead)
        # whole-window passes: the known prefixes' of every level, the codes' of the levels above 0; none at level 0
        assert passes == [*model.compressors, *model.compressors[1:]]
        forced, top_known = known_prefixes(model, knowns)
        stepping = _RecordingChannel()
        stepping.intended = intended_symbols(
            model, windows, forced, top_known, lockstep_chain(model, forced, top_known, None, max(map(len, windows)))
        )
        decoder = lockstep_chain(model, forced, top_known, stepping.code, max(map(len, windows)))
        sent = decode_rows(decoder, knowns, news)
    assert sent == [window[k:] for window, k in zip(windows, known_counts, strict=True)]
    assert len(ahead.requests) == len(stepping.requests) > 20
    for (stream, rows, logits), (stream_, rows_, logits_) in zip(ahead.requests, stepping.requests, strict=True):
        assert (stream, rows) == (stream_, rows_) and torch.equal(logits, logits_)
    assert {stream for stream, _, _ in ahead.requests} == set(range(model.num_levels + 1))
    assert all(not queue for rows in ahead.intended.values() for queue in rows.values())
    assert np.array_equal(ahead.finish(), stepping.finish())


def test_decoding_after_running_ahead_refuses_other_tokens():
    model = build_model(codec_config()).eval()
    windows = [[BOS_ID, *real_text()[:20]]]
    forced, top_known = known_prefixes(model, [windows[0][:1]])
    with torch.inference_mode():
        decoder = lockstep_chain(model, forced, top_known, lambda stream, rows, logits: [7] * len(rows), 21)
        decoder.run_ahead(windows)
        with pytest.raises(RuntimeError, match="run ahead"):
            decode_rows(decoder, [windows[0][:1]], [20])
        with pytest.raises(RuntimeError, match="not stepped yet"):
            decoder.run_ahead(windows)
