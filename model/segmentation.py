"""Entropy segmentation: where the entropy/LM branch becomes unsure, a new segment starts.

Shapes: logits (B, S, V) from the LM branch, where logits[:, t] predicts token t+1; key_padding_mask (B, S).

The rule is causal, so a decoder can recompute boundaries left to right from what it has decoded:
- `predictive_entropy[t]` = entropy (nats) of the distribution over token t, i.e. of logits[t-1], computed
  from tokens < t. Position 0 has none.
- Position t (not padding) opens a segment if it is the first non-pad position, or
  (entropy[t] > entropy[t-1] + entropy_delta, t-1 not padding) or entropy[t] > entropy_abs_threshold,
  provided the current segment already has >= min_segment_len positions; and it always opens one when the
  current segment has max_segment_len positions.
- PAD never opens, joins or validates a segment: its segment id is -1 and it adds no length.

`EntropySegmenter.segment` does whole batches, vectorised (length bounds by pointer doubling in O(log S)
rounds, no loop over positions); `EntropySegmenter.step` does one position for a `SegmentationState`
(generation), and `RowsSegmentation` the same step for many rows at once (lockstep decoding), in the same
float32 arithmetic. Property tests check that they agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def predictive_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits[:, t-1]) placed at t; (B, S, V) -> (B, S), position 0 = 0."""
    logp = torch.log_softmax(logits.detach().float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return torch.nn.functional.pad(entropy[:, :-1], (1, 0))


@dataclass
class SegmentationState:
    """Decoding state of one row: previous position's entropy, open segment's length, segments so far."""

    previous_entropy: float | None = None
    segment_length: int = 0
    num_segments: int = 0


class EntropySegmenter:
    """Boundaries from next-token entropy, bounded by min/max segment length. Holds no parameters."""

    def __init__(
        self,
        entropy_delta: float,
        entropy_abs_threshold: float | None = None,
        min_segment_len: int = 1,
        max_segment_len: int | None = None,
    ):
        self.entropy_delta = entropy_delta
        self.entropy_abs_threshold = entropy_abs_threshold
        self.min_segment_len = min_segment_len
        self.max_segment_len = max_segment_len

    def wants_boundary(self, entropy: torch.Tensor, previous: torch.Tensor, previous_known: torch.Tensor):
        """The entropy part of the rule (before length bounds), elementwise."""
        rise = previous_known & (entropy > previous + self.entropy_delta)
        if self.entropy_abs_threshold is not None:
            rise = rise | (entropy > self.entropy_abs_threshold)
        return rise

    @torch.no_grad()
    def segment(self, entropy: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Segment id of every position (B, S) long, -1 at padding. `entropy` is `predictive_entropy(...)`."""
        B, S = entropy.shape
        device = entropy.device
        real = torch.ones(B, S, dtype=torch.bool, device=device)
        if key_padding_mask is not None:
            real = ~key_padding_mask
        if S == 0:
            return torch.zeros(B, 0, dtype=torch.long, device=device)
        previous = torch.nn.functional.pad(entropy[:, :-1], (1, 0))
        previous_known = torch.nn.functional.pad(real[:, :-1], (1, 0), value=False)
        # Position 0 has no predictive entropy, so position 1 has nothing to compare with: t >= 2 compares.
        if S > 1:
            previous_known[:, 1] = False
        wants = self.wants_boundary(entropy, previous, previous_known) & real
        first_real = real & (real.long().cumsum(1) == 1)  # the first real position always opens

        if self.min_segment_len <= 1 and self.max_segment_len is None:
            opens = wants | first_real
        else:
            opens = self._bounded_starts(wants, real)
        ids = opens.long().cumsum(1) - 1
        return torch.where(real, ids, torch.full_like(ids, -1))

    def _bounded_starts(self, wants: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Segment starts under min/max lengths, in O(log S) vectorised rounds (no loop over positions).

        Real positions are packed to the front of each row, so lengths count real positions only. From a start
        p the next start is n(p) = min(first wanted position >= p + min_len, p + max_len); the starts are the
        orbit 0, n(0), n(n(0)), ... Pointer doubling finds it: each round marks the images of the marked
        positions under the current jump, then squares the jump; after r rounds the first 2^r starts are marked.
        """
        B, S = wants.shape
        device = wants.device
        end = S  # sentinel node: "no further start"
        order = torch.sort((~real).to(torch.int8), dim=1, stable=True).indices  # real positions first, in order
        packed_wants = wants.gather(1, order)  # padding never wants a boundary
        real_count = real.sum(1, keepdim=True)
        positions = torch.arange(S + 1, device=device).expand(B, S + 1)
        candidates = torch.where(packed_wants, positions[:, :S], torch.full_like(positions[:, :S], end))
        next_wanted = candidates.flip(1).cummin(1).values.flip(1)  # first wanted position >= t
        next_wanted = torch.cat([next_wanted, torch.full((B, 1), end, device=device)], dim=1)
        jump = next_wanted.gather(1, (positions + self.min_segment_len).clamp(max=end))
        if self.max_segment_len is not None:
            jump = torch.minimum(jump, (positions + self.max_segment_len).clamp(max=end))
        jump = torch.where(jump >= real_count, torch.full_like(jump, end), jump)
        jump[:, end] = end

        marked = torch.zeros(B, S + 1, dtype=torch.bool, device=device)
        marked[:, 0] = real_count[:, 0] > 0
        for _ in range(max(1, math.ceil(math.log2(S + 1)))):
            targets = torch.where(marked, jump, torch.full_like(jump, end))
            marked = marked.scatter(1, targets, torch.ones_like(marked))
            jump = jump.gather(1, jump)
        return torch.zeros_like(wants).scatter(1, order, marked[:, :S]) & real

    def step(self, state: SegmentationState, entropy: float | None) -> bool:
        """Advance over one real position whose predictive entropy is `entropy` (None at position 0).

        Returns True if this position opens a new segment; updates `state`.
        """
        if state.num_segments == 0:
            opens = True
        else:
            previous_known = state.previous_entropy is not None and entropy is not None
            wants = False
            if entropy is not None:
                wants = bool(
                    self.wants_boundary(
                        torch.tensor(entropy),
                        torch.tensor(state.previous_entropy if previous_known else 0.0),
                        torch.tensor(previous_known),
                    )
                )
            long_enough = state.segment_length >= self.min_segment_len
            too_long = self.max_segment_len is not None and state.segment_length >= self.max_segment_len
            opens = (wants and long_enough) or too_long
        if opens:
            state.num_segments += 1
            state.segment_length = 1
        else:
            state.segment_length += 1
        state.previous_entropy = entropy
        return opens


class RowsSegmentation:
    """`EntropySegmenter.step` for many independent rows at once, the state held as tensors (lockstep decoding):
    one call per decoding step instead of one per row. Entropies stay float32 tensors, so the comparisons are
    the ones `segment` makes."""

    def __init__(self, segmenter: EntropySegmenter, rows: int):
        self.segmenter = segmenter
        self.entropy = torch.zeros(rows)  # of the distribution over each row's next token, once known
        self.entropy_known = torch.zeros(rows, dtype=torch.bool)
        self.previous_entropy = torch.zeros(rows)
        self.previous_known = torch.zeros(rows, dtype=torch.bool)
        self.segment_length = torch.zeros(rows, dtype=torch.long)
        self.num_segments = torch.zeros(rows, dtype=torch.long)

    def step(self, rows: torch.Tensor) -> torch.Tensor:
        """Advance the given rows (1-d long, no repeats) over their next position; returns each one's segment."""
        s = self.segmenter
        entropy, known = self.entropy[rows], self.entropy_known[rows]
        wants = known & s.wants_boundary(entropy, self.previous_entropy[rows], self.previous_known[rows] & known)
        length = self.segment_length[rows]
        opens = (self.num_segments[rows] == 0) | (wants & (length >= s.min_segment_len))
        if s.max_segment_len is not None:
            opens = opens | (length >= s.max_segment_len)
        self.num_segments[rows] += opens.long()
        self.segment_length[rows] = torch.where(opens, 1, length + 1)
        self.previous_entropy[rows], self.previous_known[rows] = entropy, known
        return self.num_segments[rows] - 1

    def set_entropy(self, rows: torch.Tensor, entropy: torch.Tensor) -> None:
        """The entropy (float32) of the distribution over each given row's next token."""
        self.entropy[rows] = entropy
        self.entropy_known[rows] = True
