"""The two-part code of one window, as a sequence of range-coded symbols, with context carried across windows.

A file is the token stream BOS + bytes + EOS (the framing the evaluation scores), cut into windows of at most
`window` tokens (the model's sequence_length). Window 0 is [BOS] + the next window - 1 tokens, with BOS known;
each later window re-reads the last `context` tokens of the stream (known to the receiver: already decoded) and
codes the next window - context tokens. `plan_windows` gives (start, known_end, end) stream indices.

Coding a window is decoding it: the encoder runs exactly the decoder's loop (model/generation.py's level
decoders, boundaries recomputed causally step by step, KV caches, the top LM through `TopLM.code_logits`), and
wherever the decoder would read a symbol the encoder codes the one it means to send. So the two ends compute
the same distributions from the same inputs in the same order, which is what keeps them bit-identical
(one thread, fp32, CPU), and any symbol the encoder picks decodes.

What the receiver knows before the window, computed by both ends from the known tokens alone
(`known_prefix`): the known tokens at level 0, and at each level above the codes of the closed segments below
(components/evaluation/conditional_code_length.py's `known_counts`, from one pass over known + one probe token: segments
and pooling are causal, so the probe changes nothing it returns). Everything else is sent: the top codes from
the first unknown top row (the code of a segment that straddles the cut included), each level's tokens from its
first unknown one. That is the conditional code length of the window's new tokens given its known ones.

What the encoder means to send (`intended_symbols`): the new tokens at level 0, and the codes one pass of
model.compress over the whole window gives for the unknown rows of each level above. If the step-by-step
boundaries ever differ from that pass (a float tie), the symbols still decode; they only cost more.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import torch

from components.evaluation.conditional_code_length import known_counts
from model.generation import LevelDecoder, TopCodeSource
from model.tokenizer import EOS_ID


class CodingLevelDecoder(LevelDecoder):
    """A level decoder whose free choices go through the channel (forced tokens are known: not coded)."""

    def __init__(self, model, level: int, parent, forced: list[int], channel):
        super().__init__(model, level, parent, forced)
        self.channel = channel

    def choose_token(self, logits: torch.Tensor) -> int:
        return self.channel.code(self.level, logits)


class CodingTopSource(TopCodeSource):
    """Top codes: the known ones, then each next one coded under the top LM's distribution."""

    def __init__(self, model, known: list[int], channel):
        super().__init__(model, known, predict=True)
        self.channel = channel

    def _predict_next(self) -> int:
        return self.channel.code(self.model.num_levels, self.next_logits())


def default_context(window: int) -> int:
    """Known tokens each window re-reads unless told otherwise. Context lowers the expander's and entropy
    model's bits of the first tokens of a window, but every window boundary pays one extra top code (the
    previous window sent its last, cut-off segment; this one sends the whole segment again), and more context
    means more windows: on a small trained model (tests/codec_helpers.py, window 64) an eighth was best."""
    return window // 8


def plan_windows(total_tokens: int, window: int, context: int) -> Iterator[tuple[int, int, int]]:
    """(start, known_end, end) of each window over a stream of total_tokens (BOS first)."""
    if window < 2 or not 0 <= context < window:
        raise ValueError(f"windows need 2 <= window and 0 <= context < window (got {window}, {context})")
    known_end, start = 1, 0
    while known_end < total_tokens:
        end = min(start + window, total_tokens)
        yield start, known_end, end
        known_end = end
        start = max(0, end - context)


@torch.no_grad()
def known_prefix(model, known: list[int]) -> tuple[list[list[int]], list[int]]:
    """Known tokens of every level (bottom first) and the known top codes, from the known tokens alone."""
    tokens = torch.tensor([[*known, EOS_ID]], dtype=torch.long)  # one probe token: the first unknown position
    compressed = model.compress(tokens)
    counts = known_counts(model, compressed, torch.tensor([len(known)]))
    per_level = [list(known)]
    for level, out in enumerate(compressed["levels"]):
        per_level.append(out.codes[0, : int(counts[level + 1][0])].tolist())
    return per_level[: model.num_levels], per_level[model.num_levels]


@torch.no_grad()
def intended_symbols(model, tokens: list[int], forced: list[list[int]], top_known: list[int]) -> dict[int, deque]:
    """Per stream, the symbols the encoder means to send for the window `tokens` (known + new)."""
    compressed = model.compress(torch.tensor([tokens], dtype=torch.long))
    streams = {0: deque(tokens[len(forced[0]) :])}
    for level in range(1, model.num_levels):
        out = compressed["levels"][level - 1]
        codes = out.codes[0][out.row_valid[0]].tolist()
        streams[level] = deque(codes[len(forced[level]) :])
    top = compressed["levels"][-1]
    streams[model.num_levels] = deque(top.codes[0][top.row_valid[0]].tolist()[len(top_known) :])
    return streams


def _chain(model, forced: list[list[int]], top_known: list[int], channel) -> CodingLevelDecoder:
    parent = CodingTopSource(model, top_known, channel)
    for level in reversed(range(model.num_levels)):
        parent = CodingLevelDecoder(model, level, parent, forced[level], channel)
    return parent


@torch.no_grad()
def run_window(model, known: list[int], new_count: int, channel) -> list[int]:
    """Replay the known tokens, then code (or decode) `new_count` tokens; returns the new tokens."""
    forced, top_known = known_prefix(model, known)
    decoder = _chain(model, forced, top_known, channel)
    out = []
    for position in range(len(known) + new_count):
        token = decoder.next_token()
        if token is None:  # cannot happen: the coding top source never runs dry
            raise RuntimeError("the decoder ran out of codes")
        if position >= len(known):
            out.append(token)
    return out


def encode_window(model, tokens: list[int], known_count: int, channel) -> None:
    """Code tokens[known_count:] given tokens[:known_count] into the channel (an EncodingChannel)."""
    forced, top_known = known_prefix(model, tokens[:known_count])
    channel.intended = intended_symbols(model, tokens, forced, top_known)
    sent = run_window(model, tokens[:known_count], len(tokens) - known_count, channel)
    if sent != tokens[known_count:]:  # level 0 always sends its intended tokens; this guards that contract
        raise RuntimeError("the encoder sent other tokens than the window's")
