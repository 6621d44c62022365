"""Lockstep decoding's building blocks (model/lockstep_decoding.py): ragged KV caches and the top LM's step.

Rows of a ragged cache hold different numbers of positions and step in any subset; each row must see exactly
what a cache of its own would give it (its own keys, its own RoPE position, its sliding window). The codec's
round trips and size check (tests/test_codec_roundtrip.py) test the decoder built on them end to end.
"""

from __future__ import annotations

import pytest
import torch

from components.codec.window_coder import known_prefixes
from model import build_model
from model.attention import KeyValueCache
from model.blocks import TransformerBlock
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
