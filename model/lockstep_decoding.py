"""Lockstep decoding: many independent rows decoded together, each model call computing every row that needs it.

model/generation.py decodes one row at a time; this is the same decoder (boundaries recomputed causally from
each level's LM entropy, code rows pulled from the level above when a segment opens, KV caches, the top LM
through `TopLM.code_logits`) for a set of rows that advance together: `next_tokens(rows)` gives the next token
of each listed row. Rows are independent (the codec's streams, components/codec/): they open segments at
different positions, so a level above is asked for codes by a different subset of rows at each step, and its
rows then hold different numbers of tokens. Ragged KV caches (model/ragged_cache.py) let
one step call take each row at its own position, so every request is one model call (two when some rows are
at their first position, which reads the start vector instead of a previous token).

The code rows a position may read (its segment and `lookback` earlier ones) are passed per row, from that row's
earliest readable segment, with the row's segment index counted from there (cross-attention's RoPE is relative,
so the shift changes nothing but rounding); rows that hold fewer segments are padded past their own segment,
where segment-aligned cross-attention never reads.

Determinism: which rows go into which call, and in what order, depends only on the tokens decoded so far, so an
encoder and a decoder that decode the same tokens make the same calls with the same shapes and get the same
floats (the codec relies on it). `choose(stream, rows, logits)` picks the free tokens: stream is the level (or
num_levels for the top codes), logits (len(rows), V) fp32. An encoder, which knows level 0's tokens in advance,
may run that level's compressor steps ahead (`LockstepLevelDecoder.run_ahead`): the same calls, made earlier.
"""

from __future__ import annotations

import bisect
import weakref
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import torch

from model.ragged_cache import MIN_CAPACITY, RaggedKeyValueCaches
from model.segmentation import RowsSegmentation
from model.tokenizer import PAD_ID

Chooser = Callable[[int, list[int], torch.Tensor], list[int]]


def _ragged(caches, rows: int, capacity: int = MIN_CAPACITY) -> RaggedKeyValueCaches:
    return RaggedKeyValueCaches([cache.window for cache in caches], rows, capacity)


def _views(caches: RaggedKeyValueCaches, index: torch.Tensor):
    return caches.views(index)


def _by_start(rows: list[int], lengths: list[int]) -> list[list[int]]:
    """Rows at their first position, then the others (each list one model call; empty lists dropped)."""
    first = [row for row in rows if lengths[row] == 0]
    later = [row for row in rows if lengths[row] > 0]
    return [group for group in (first, later) if group]


def _entropy(lm_logits: torch.Tensor) -> torch.Tensor:
    """The entropy (float32) of each row's next-token distribution: what the boundaries are cut on."""
    log_probs = torch.log_softmax(lm_logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1)


def _grown(table: torch.Tensor, needed: int) -> torch.Tensor:
    """`table` (rows, capacity, ...) with room for `needed` entries per row (doubling: amortised O(1))."""
    if table.shape[1] >= needed:
        return table
    grown = table.new_zeros((table.shape[0], max(needed, 2 * table.shape[1]), *table.shape[2:]))
    grown[:, : table.shape[1]] = table
    return grown


class _Ahead(NamedTuple):
    """A level's compressor steps run ahead (`LockstepLevelDecoder.run_ahead`), per (row, position)."""

    tokens: torch.Tensor  # (rows, T) long
    segments: torch.Tensor  # (rows, T) long, -1 past a row's end
    states: torch.Tensor  # (rows, T, D) the LM state after each token


class LockstepTopSource:
    """Top codes of each row: its known ones first, then each next one chosen under the top LM's distribution.
    The top LM runs position by position with ragged KV caches (`TopLM.step`); before a prediction, a row's
    caches catch up over the codes it emitted since its last one (its known codes). When the top expander reads
    the top LM's state (`expander_reads_top_state`), a row about to emit the first code of a segment, known or
    not, runs the top LM up to that row too, and `states[row]` keeps that state (D_top,): the state of the
    row's latest segment, the one its top-level decoder is decoding (a decoder asks for a segment's codes when
    the segment opens)."""

    def __init__(self, model, known: dict[int, list[int]], choose: Chooser):
        self.model, self.choose = model, choose
        self.known = {row: deque(codes) for row, codes in known.items()}
        self.emitted: dict[int, list[int]] = {row: [] for row in known}
        self.caches = _ragged(model.top_lm.new_caches(), len(known))
        self.states = torch.zeros(len(known), model.top_lm.norm.weight.shape[0])
        self.decoder: LockstepLevelDecoder | None = None  # the top level's decoder attaches itself (pooled inputs)

    def next_tokens(self, rows: list[int]) -> dict[int, int]:
        predicted = [row for row in rows if not self.known[row]]
        opening = []
        if self.model.reads_top_state:
            L = self.model.top_lm.rows_per_segment
            opening = [row for row in rows if len(self.emitted[row]) % L == 0]
        predictions, hidden = self._run_to_next(sorted(set(predicted) | set(opening)))
        for row in opening:
            self.states[row] = hidden[row]
        out = {row: self.known[row].popleft() for row in rows if self.known[row]}
        if predicted:
            quantizer = self.model.compressors[-1].quantizer
            stacked = torch.stack([predictions[row] for row in predicted])
            logits = self.model.top_lm.code_logits(stacked[:, None], quantizer.codebook)[:, 0]
            chosen = self.choose(self.model.num_levels, predicted, logits)
            out.update(zip(predicted, chosen, strict=True))
        for row in rows:
            self.emitted[row].append(out[row])
        return out

    @torch.no_grad()
    def _run_to_next(self, rows: list[int]) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """The top LM's prediction (D_code,) and state (D_top,) at each row's next position (the one that
        predicts its next code), given the codes it emitted so far."""
        quantizer = self.model.compressors[-1].quantizer
        predictions: dict[int, torch.Tensor] = {}
        hidden: dict[int, torch.Tensor] = {}
        # Position len(emitted) predicts the next code; positions before it only fill the caches.
        while True:
            lengths = self.caches.lengths.tolist()  # positions fed so far, per row (the groups below are disjoint)
            if not (pending := [row for row in rows if lengths[row] <= len(self.emitted[row])]):
                break
            for group in _by_start(pending, lengths):
                index = torch.tensor(group)
                previous = pooled = None
                if lengths[group[0]] > 0:
                    codes = [self.emitted[row][lengths[row] - 1] for row in group]
                    previous = quantizer.lookup(torch.tensor(codes))
                    pooled = self._pooled_inputs(group, [lengths[row] - 1 for row in group])
                out, states = self.model.top_lm.step(previous, _views(self.caches, index), len(group), pooled)
                for i, row in enumerate(group):
                    if lengths[row] == len(self.emitted[row]):  # the step just taken was the predicting one
                        predictions[row], hidden[row] = out[i], states[i]
        return predictions, hidden

    def _pooled_inputs(self, rows: list[int], code_rows: list[int]) -> torch.Tensor | None:
        """With pooled_inputs, each row's pooled vector of top row code_rows[i] (zero unless that row closes its
        segment), recomputed from the tokens its decoder has decoded: that segment is closed by now."""
        top_lm = self.model.top_lm
        if not top_lm.pooled_inputs:
            return None
        closes = top_lm.closes_segment(torch.tensor(code_rows))
        vectors = torch.zeros(len(rows), self.model.compressors[-1].dim)
        if bool(closes.any()):
            closing = closes.nonzero()[:, 0].tolist()
            vectors[closes] = self.decoder.pooled_vectors([rows[i] for i in closing], [code_rows[i] for i in closing])
        return vectors


class LockstepLevelDecoder:
    """One level's tokens for many rows; `forced` tokens of a row are replayed (known) before it chooses any.

    Per-row state lives in tensors indexed by row (segmentation, previous token, LM state, code rows), so a
    step's bookkeeping is a few tensor operations for all its rows rather than Python work per row."""

    def __init__(self, model, level: int, parent, forced: dict[int, list[int]], choose: Chooser, positions: int):
        self.level, self.parent, self.choose = level, parent, choose
        self.compressor = model.compressors[level]
        self.expander = model.expanders[level]
        self.rows_per_segment = self.compressor.num_queries
        self.lookback = self.expander.lookback
        rows = len(forced)
        self.forced = {row: deque(tokens) for row, tokens in forced.items()}
        self.segmentation = RowsSegmentation(self.compressor.segmenter, rows)
        self.previous = torch.zeros(rows, dtype=torch.long)  # each row's previous token (once it has one)
        self.lm_state = torch.zeros(rows, self.compressor.dim)  # the compressor's LM state after it
        self.codes = torch.zeros(rows, 16, dtype=torch.long)  # this level's code rows received so far
        self.code_counts = torch.zeros(rows, dtype=torch.long)
        self.expander_caches = _ragged(self.expander.new_caches(), rows, positions)
        self.lm_caches = _ragged(self.compressor.new_caches(), rows, positions)
        self.ahead: _Ahead | None = None  # the compressor's steps, when run ahead (`run_ahead`: the encoder)
        self.tokens: dict[int, list[int]] = {row: [] for row in forced}  # decoded so far, and the segment of each
        self.token_segments: dict[int, list[int]] = {row: [] for row in forced}
        # The top level's pooled vectors (the top LM's pooled inputs), pooled from the pooler inputs that each
        # step computes beside the LM state: one compression-layer step per token, instead of re-running the
        # trunk over a row's decoded tokens for every segment it closes.
        self.pooling_caches = None
        # The top level's decoder passes the top LM's state of each row's segment to an expander that reads it.
        self.reads_top_state = isinstance(parent, LockstepTopSource) and model.reads_top_state
        if isinstance(parent, LockstepTopSource):
            parent.decoder = weakref.proxy(self)  # weak: a cycle would wait for the collector
            if model.top_lm.pooled_inputs:
                self.pooling_caches = _ragged(self.compressor.new_pooling_caches(), rows, positions)
                self.pooling_inputs = torch.zeros(rows, 16, self.compressor.dim)  # (rows, position, D)

    @torch.no_grad()
    def next_tokens(self, rows: list[int]) -> dict[int, int]:
        index = torch.tensor(rows)
        if self.ahead is None:
            segments = self.segmentation.step(index)
        else:
            segments = self.ahead.segments[index, self.expander_caches.lengths[index]]
        L = self.rows_per_segment
        while (needing := index[self.code_counts[index] < (segments + 1) * L]).numel():
            received = self.parent.next_tokens(needing.tolist())
            counts = self.code_counts[needing]
            self.codes = _grown(self.codes, int(counts.max()) + 1)
            self.codes[needing, counts] = torch.tensor([received[row] for row in needing.tolist()])
            self.code_counts[needing] = counts + 1
        starting = self.expander_caches.lengths[index] == 0  # at their first position: no previous token
        if bool(starting.any()) and not bool(starting.all()):  # two calls: the start vector, then the others
            tokens = self._step(index[starting], segments[starting])
            tokens.update(self._step(index[~starting], segments[~starting]))
            return tokens
        return self._step(index, segments)

    def _memory(self, index: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the code vectors (len(rows), M, D) of the segments its position may read (from its earliest
        readable one; rows past the row's own segment are never read), and the position's segment counted from
        the first of them."""
        L = self.rows_per_segment
        firsts = (segments - self.lookback).clamp_min(0)
        columns = (firsts * L)[:, None] + torch.arange((self.lookback + 1) * L)
        self.codes = _grown(self.codes, int(columns.max()) + 1)
        ids = self.codes[index[:, None], columns]
        return self.compressor.quantizer.lookup(ids), segments - firsts

    def _step(self, index: torch.Tensor, segments: torch.Tensor) -> dict[int, int]:
        rows = index.tolist()
        memory, local_segment = self._memory(index, segments)
        previous, lm_state = None, None
        if self.expander_caches.lengths[rows[0]] > 0:
            previous, lm_state = self.previous[index], self.lm_state[index]
        positions = self.expander_caches.lengths[index]  # each row's position: where its pooler input goes
        top_state = self.parent.states[index] if self.reads_top_state else None
        caches = _views(self.expander_caches, index)
        logits = self.expander.step(previous, local_segment, memory, 0, caches, lm_state, top_state)
        free = [i for i, row in enumerate(rows) if not self.forced[row]]
        tokens = [self.forced[row].popleft() if self.forced[row] else -1 for row in rows]
        if free:
            chosen = self.choose(self.level, [rows[i] for i in free], logits[free])
            for i, token in zip(free, chosen, strict=True):
                tokens[i] = token
        token_tensor = torch.tensor(tokens)
        if self.ahead is not None:
            if not torch.equal(token_tensor, self.ahead.tokens[index, positions]):
                raise RuntimeError("the tokens chosen differ from the tokens the compressor was run ahead on")
            lm_states = self.ahead.states[index, positions]
        else:
            if self.pooling_caches is None:
                lm_logits, lm_states = self.compressor.lm_step(token_tensor, _views(self.lm_caches, index))
            else:
                lm_logits, lm_states, pooling = self.compressor.lm_step(
                    token_tensor, _views(self.lm_caches, index), _views(self.pooling_caches, index)
                )
                self.pooling_inputs = _grown(self.pooling_inputs, int(positions.max()) + 1)
                self.pooling_inputs[index, positions] = pooling
            self.segmentation.set_entropy(index, _entropy(lm_logits))
        self.previous[index], self.lm_state[index] = token_tensor, lm_states
        for row, token, segment in zip(rows, tokens, segments.tolist(), strict=True):
            self.tokens[row].append(token)
            self.token_segments[row].append(segment)
        return dict(zip(rows, tokens, strict=True))

    @torch.no_grad()
    def run_ahead(self, tokens: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's shortcut: run this level's compressor over each row's `tokens` (all of them, known and
        to be sent) before decoding starts, one step call per position for the rows that reach it, which are the
        calls decoding makes at level 0 of a round (every row starts together and advances one position per
        call), so the states, entropies and boundaries are the decoder's floats. Decoding then reads them instead
        of stepping the compressor again, and must choose exactly these tokens.

        Returns each position's segment (rows, T; -1 past a row's end) and pooler input (rows, T, D): an encoder
        pools a segment's code from them before the segment is decoded, with the decoder's own boundaries."""
        if self.ahead is not None or bool(self.lm_caches.lengths.any()):
            raise RuntimeError("run_ahead is for a level decoder that has not stepped yet")
        n, lengths = len(tokens), [len(row) for row in tokens]
        longest = max(lengths, default=0)
        pooling_caches = self.pooling_caches
        if pooling_caches is None:  # the decoder does not pool at this level; the encoder still pools its codes
            pooling_caches = _ragged(self.compressor.new_pooling_caches(), n, longest)
        table = torch.full((n, longest), PAD_ID, dtype=torch.long)
        segments = torch.full((n, longest), -1, dtype=torch.long)
        states = torch.zeros(n, longest, self.compressor.dim)
        pooling = torch.zeros(n, longest, self.compressor.dim)
        for position in range(longest):
            rows = [row for row in range(n) if position < lengths[row]]
            index = torch.tensor(rows)
            segments[index, position] = self.segmentation.step(index)
            token = table[index, position] = torch.tensor([tokens[row][position] for row in rows])
            lm_logits, states[index, position], pooling[index, position] = self.compressor.lm_step(
                token, _views(self.lm_caches, index), _views(pooling_caches, index)
            )
            self.segmentation.set_entropy(index, _entropy(lm_logits))
        self.ahead = _Ahead(table, segments, states)
        self.pooling_inputs = pooling
        return segments, pooling

    @torch.no_grad()
    def pooled_vectors(self, rows: list[int], code_rows: list[int]) -> torch.Tensor:
        """The pooled (pre-VQ) vectors (len(rows), D) of top row code_rows[i] of rows[i], pooled from the pooler
        inputs of that segment's decoded positions (the segment must be closed: pooling and the layers below it
        are causal, so later tokens change nothing). One padded pooler call for all of them."""
        L = self.rows_per_segment
        starts, lengths = [], []
        for row, code_row in zip(rows, code_rows, strict=True):
            segments = self.token_segments[row]  # non-decreasing: a segment's positions are one run
            start = bisect.bisect_left(segments, code_row // L)
            starts.append(start)
            lengths.append(bisect.bisect_right(segments, code_row // L, start) - start)
        offsets = torch.arange(max(lengths))
        valid = offsets[None] < torch.tensor(lengths)[:, None]
        positions = (torch.tensor(starts)[:, None] + offsets).masked_fill(~valid, 0)
        hidden = self.pooling_inputs[torch.tensor(rows)[:, None], positions].masked_fill(~valid[..., None], 0.0)
        pooled = self.compressor.pool_segments(hidden, valid)
        return pooled[torch.arange(len(rows)), torch.tensor(code_rows) % L]


def lockstep_chain(
    model,
    forced: dict[int, list[list[int]]],
    top_known: dict[int, list[int]],
    choose: Chooser,
    positions: int = MIN_CAPACITY,
):
    """The byte-level decoder of a chain (top source, then each level down to bytes) over rows 0..n-1:
    `forced` row -> known tokens of each level (bottom first), `top_known` row -> known top codes. `positions`:
    the bytes a row will take at most, when known (level 0's caches are made that long at once; more still fit,
    by growing them)."""
    if sorted(forced) != list(range(len(forced))) or sorted(top_known) != sorted(forced):
        raise ValueError("lockstep rows are numbered 0..n-1, with known top codes for each")
    parent = LockstepTopSource(model, top_known, choose)
    for level in reversed(range(model.num_levels)):
        known = {row: tokens[level] for row, tokens in forced.items()}
        parent = LockstepLevelDecoder(model, level, parent, known, choose, positions if level == 0 else MIN_CAPACITY)
    return parent
