"""The two-part code of a round of windows (one per stream), as range-coded symbols, with context carried
across windows.

A stream (a chunk of the file, components/codec/files.py) is the token stream BOS + bytes + EOS (the framing the
evaluation scores), cut into windows of at most `window` tokens (the model's sequence_length). Window 0 is [BOS]
+ the next window - 1 tokens, with BOS known; each later window re-reads the last `context` tokens of the stream
(known to the receiver: already decoded) and codes the next window - context tokens. `plan_windows`
(model/window_plan.py) gives (start, known_end, end) stream indices. A round codes one window of each of several
streams, side by side.

Coding a round is decoding it: the encoder runs the decoder's loop (model/lockstep_decoding.py: the level
decoders of model/generation.py for many rows at once, boundaries recomputed causally step by step, KV caches,
the top LM through `TopLM.code_logits`), and wherever the decoder would read symbols the encoder codes the ones
it means to send. So the two ends compute the same distributions from the same inputs in the same batched calls
(the encoder makes level 0's compressor calls first, since it knows those tokens: the same calls), which is what
keeps them bit-identical (one thread, fp32, CPU), and any symbol the encoder picks decodes.

What the receiver knows before the window, computed by both ends from the known tokens alone
(`known_prefixes`): the known tokens at level 0, and at each level above the codes of the closed segments below
(components/evaluation/conditional_code_length.py's `known_counts`, from one pass over known + one probe token:
segments and pooling are causal, so the probe changes nothing it returns). Everything else is sent: the top codes
from the first unknown top row (the code of a segment that straddles the cut included), each level's tokens from
its first unknown one. That is the conditional code length of the window's new tokens given its known ones.

What the encoder means to send (`intended_symbols`): the new tokens at level 0, and for the unknown rows of each
level above, the codes of the decoder's own segments. The encoder knows the whole window, so it runs level 0's
compressor steps ahead (`LockstepLevelDecoder.run_ahead`: the calls decoding makes, so the decoder's floats and
boundaries) and pools each segment's code from those steps before the segment is coded; the levels above (if
any) are one batched pass over those codes. Whatever it sends decodes: the decoder repeats the same requests.
"""

from __future__ import annotations

from collections import deque

import torch

from components.evaluation.conditional_code_length import known_counts
from model.lockstep_decoding import lockstep_chain
from model.tokenizer import EOS_ID, PAD_ID


def _padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, key_padding_mask) of right-padded rows."""
    tokens = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return tokens, tokens == PAD_ID


@torch.inference_mode()
def known_prefixes(model, knowns: list[list[int]]) -> tuple[dict[int, list[list[int]]], dict[int, list[int]]]:
    """Per row: the known tokens of every level (bottom first) and the known top codes, from the known tokens
    alone (one padded pass over every row)."""
    tokens, padding = _padded([[*known, EOS_ID] for known in knowns])  # one probe token: the first unknown one
    compressed = model.compress(tokens, padding)
    counts = known_counts(model, compressed, torch.tensor([len(known) for known in knowns]))
    forced, top = {}, {}
    for row, known in enumerate(knowns):
        per_level = [list(known)]
        for level, out in enumerate(compressed.levels):
            per_level.append(out.codes[row, : int(counts[level + 1][row])].tolist())
        forced[row], top[row] = per_level[: model.num_levels], per_level[model.num_levels]
    return forced, top


@torch.inference_mode()
def intended_symbols(
    model, windows: list[list[int]], forced: dict[int, list[list[int]]], top_known: dict[int, list[int]], level0
) -> dict[int, dict[int, deque]]:
    """Stream -> row -> the symbols the encoder means to send for each window (known + new tokens). level0: the
    round's level-0 decoder, whose compressor is run ahead over the windows here (`run_ahead`)."""
    segments, pooler_inputs = level0.run_ahead(windows)
    compressor = model.compressors[0]
    pooled, row_valid = compressor.pooler(pooler_inputs, segments)
    codes = compressor.quantizer(pooled, row_valid).codes
    per_level = [(codes, row_valid)]
    for compressor in model.compressors[1:]:  # the levels above read the codes below as their tokens
        out = compressor(codes, ~row_valid)
        codes, row_valid = out.codes, out.row_valid
        per_level.append((codes, row_valid))
    streams: dict[int, dict[int, deque]] = {level: {} for level in range(model.num_levels + 1)}
    for row, window in enumerate(windows):
        streams[0][row] = deque(window[len(forced[row][0]) :])
        for level, (codes, valid) in enumerate(per_level, start=1):
            sent = codes[row][valid[row]].tolist()
            already = top_known[row] if level == model.num_levels else forced[row][level]
            streams[level][row] = deque(sent[len(already) :])
    return streams


def decode_rows(decoder, knowns: list[list[int]], new_counts: list[int]) -> list[list[int]]:
    """Replay each row's known tokens, then decode its `new_counts` tokens, all rows in lockstep."""
    totals = [len(known) + count for known, count in zip(knowns, new_counts, strict=True)]
    out: list[list[int]] = [[] for _ in knowns]
    active, position = [row for row, total in enumerate(totals) if total > 0], 0
    while active:
        tokens = decoder.next_tokens(active)
        for row in active:
            if position >= len(knowns[row]):
                out[row].append(tokens[row])
        position += 1
        active = [row for row in active if position < totals[row]]
    return out


@torch.inference_mode()
def run_round(model, knowns: list[list[int]], new_counts: list[int], channel) -> list[list[int]]:
    """Replay each row's known tokens, then decode its `new_counts` tokens from the channel, all rows in
    lockstep; returns each row's new tokens."""
    forced, top_known = known_prefixes(model, knowns)
    totals = [len(known) + count for known, count in zip(knowns, new_counts, strict=True)]
    decoder = lockstep_chain(model, forced, top_known, channel.code, max(totals))
    return decode_rows(decoder, knowns, new_counts)


@torch.inference_mode()
def encode_round(model, windows: list[list[int]], known_counts_: list[int], channel) -> None:
    """Code each window's tokens[known:] given tokens[:known] into the channel (an EncodingChannel), making the
    decoder's calls (`run_round`), with the level-0 compressor's run ahead."""
    knowns = [window[:known] for window, known in zip(windows, known_counts_, strict=True)]
    forced, top_known = known_prefixes(model, knowns)
    decoder = lockstep_chain(model, forced, top_known, channel.code, max(len(window) for window in windows))
    channel.intended = intended_symbols(model, windows, forced, top_known, decoder)
    # level 0 sends its intended tokens; its decoder, run ahead on the windows, refuses any other
    decode_rows(decoder, knowns, [len(window) - known for window, known in zip(windows, known_counts_, strict=True)])
