"""Conditional code length: the bits this model needs to send `target` to a receiver who already has `context`.

This is what lm-eval's `loglikelihood` asks for: log2 P(continuation | context) = -bits(continuation | context).

Why not L(context + target) - L(context)? The model's code length is not prefix-consistent. A segment's code is
pooled from the segment's whole content, so when the context ends inside a segment, the context coded alone
ends with a different, shorter segment (another code, other expander bits) than the same bytes inside
context + target: L(context) is not the part of L(context + target) that pays for the context, and the
difference can even be negative (tests/test_eval_conditional.py shows it).

What is computed instead: one forward pass over [BOS] + context + target gives, per level i, the segmentation,
the codes, the expander bits of every token and the top LM bits of every top code row. The receiver knows:
  - level 0: the BOS and context tokens (`known_0`);
  - level i: its known tokens; a level-i segment is known when all its tokens are known and it is closed, i.e.
    the first unknown real token of the level belongs to a later segment. Because the segmentation is causal
    (the boundary rule for position t reads only tokens < t) and a segment's code reads only its own positions
    through causal layers, the receiver computes exactly these segments and their codes from the context
    alone; their codes are the known tokens of level i + 1 (`known_{i+1} = known segments * num_queries`).
The sender pays for everything else: the top LM bits of every top row at or after `known_top` (the straddling
segment's code included: it encodes target bytes), and at each level the expander bits of the tokens at or
after `known_i`. The expander bits of context tokens inside the straddling segment are not paid: the receiver
has those bytes. This is a real, decodable code given the context (decode left to right as in
model/generation.py, with the known tokens forced), so 2^-bits is a proper (sub-)probability over targets and
never looks at the target while coding the context: the context is not coded at all.

Windows: a (context, target) pair is scored in one forward pass, so callers keep len(context) + len(target) + 1
within the model's window (the lm-eval adapter cuts long inputs into windows with explicit context and stride).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch

from model.code_length import position_bits
from model.tokenizer import BOS_ID, PAD_ID


@dataclass(frozen=True)
class ScoringWindow:
    """Score `target` given `context`; `at_start`: the context is the whole text before target (BOS framed)."""

    context: bytes
    target: bytes
    at_start: bool = True


class ByteScorer(Protocol):
    """What the lm-eval adapter needs from a model: conditional bits and greedy continuations of byte strings."""

    max_length: int  # tokens one forward pass may hold, BOS included

    def conditional_bits(self, windows: list[ScoringWindow]) -> list[float]: ...

    def greedy_continuation(self, context: bytes, at_start: bool, max_bytes: int) -> bytes: ...


@contextmanager
def one_thread_on_cpu(device: torch.device):
    """Step-by-step decoding runs tiny ops; on shared CPU cores, more than one thread makes them far slower."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def window_tokens(window: ScoringWindow) -> tuple[list[int], int]:
    """Token ids of a window and how many of them are known to the receiver (BOS + context)."""
    prefix = ([BOS_ID] if window.at_start else []) + list(window.context)
    return prefix + list(window.target), len(prefix)


def per_position_bits(model, tokens: torch.Tensor, key_padding_mask: torch.Tensor, quantized: bool = False) -> dict:
    """Bits of every token at every level and of every top row, from one pass: model/code_length.py's
    `position_bits` (the one definition). Returns levels: list of (B, S_i), top: (B, R), compressed."""
    return position_bits(model, tokens, key_padding_mask, quantized)


def known_counts(model, compressed: dict, known_bytes: torch.Tensor) -> list[torch.Tensor]:
    """Known token count per row at each level, then the known top row count: len = num_levels + 1, each (B,)."""
    counts = [known_bytes]
    for compressor, out in zip(model.compressors, compressed.levels, strict=True):
        segment_ids, real = out.segment_ids, ~out.key_padding_mask
        positions = torch.arange(segment_ids.shape[1], device=segment_ids.device)
        unknown = real & (positions[None] >= counts[-1][:, None])
        # The first unknown real token's segment and all later ones must be sent; none unknown: all known.
        everything = torch.full_like(segment_ids, torch.iinfo(torch.long).max // 1024)
        first_unknown_segment = torch.where(unknown, segment_ids, everything).min(1).values
        counts.append(first_unknown_segment * compressor.num_queries)
    return counts


def conditional_bits_of_batch(
    model, windows: list[ScoringWindow], device: torch.device, quantized: bool = False
) -> list[float]:
    """bits(target | context) for each window, one padded forward pass."""
    return conditional_bits_of_tokens(model, [window_tokens(w) for w in windows], device, quantized)


def conditional_bits_of_tokens(
    model, encoded: list[tuple[list[int], int]], device: torch.device, quantized: bool = False
) -> list[float]:
    """bits of tokens[known:] given tokens[:known] for each (tokens, known) pair, one padded forward pass."""
    width = max(len(ids) for ids, _ in encoded)
    tokens = torch.full((len(encoded), width), PAD_ID, dtype=torch.long)
    for row, (ids, _) in enumerate(encoded):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    tokens = tokens.to(device)
    padding = tokens == PAD_ID
    known = torch.tensor([k for _, k in encoded], dtype=torch.long, device=device)
    bits = per_position_bits(model, tokens, padding, quantized)
    counts = known_counts(model, bits["compressed"], known)
    total = torch.zeros(len(encoded), dtype=torch.float64, device=device)
    for level_bits, count in zip(bits["levels"], counts[:-1], strict=True):
        positions = torch.arange(level_bits.shape[1], device=device)
        total += (level_bits * (positions[None] >= count[:, None])).sum(1).double()
    rows = torch.arange(bits["top"].shape[1], device=device)
    total += (bits["top"] * (rows[None] >= counts[-1][:, None])).sum(1).double()
    return [float(value) for value in total.cpu()]


class HierarchicalAEScorer:
    """ByteScorer over a HierarchicalAutoencoder with a discrete top LM (model/code_length.py)."""

    def __init__(self, model, device: torch.device, max_length: int, batch_size: int = 8):
        self.model, self.device, self.max_length, self.batch_size = model, device, max_length, batch_size
        model.eval()

    def conditional_bits(self, windows: list[ScoringWindow]) -> list[float]:
        # Longest first, so each padded batch holds windows of similar length (and an out-of-memory shows early).
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i].context) - len(windows[i].target))
        results = [0.0] * len(windows)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for index, value in zip(
                chunk, conditional_bits_of_batch(self.model, [windows[i] for i in chunk], self.device), strict=True
            ):
                results[index] = value
        return results

    def greedy_continuation(self, context: bytes, at_start: bool, max_bytes: int) -> bytes:
        """model.generate_bytes at temperature 0: argmax top codes, argmax bytes, boundaries recomputed."""
        prompt = ([BOS_ID] if at_start else []) + list(context)
        if not prompt:
            prompt = [BOS_ID]
        tokens = torch.tensor(prompt, dtype=torch.long, device=self.device)
        with one_thread_on_cpu(self.device):
            generated = self.model.generate_bytes(tokens, max_new_bytes=max_bytes, temperature=0.0)
        return bytes(int(t) for t in generated.tolist() if 0 <= int(t) < 256)
