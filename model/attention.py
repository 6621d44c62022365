"""Attention: rotary positions, sliding-window causal self-attention, segment-aligned cross-attention.

Shapes: B batch, H heads, S positions, d head dim, W window. Self-attention tensors are (B, H, S, d).

- `apply_rope(x, positions)`: rotary position embedding (half-split convention), positions (S,) or (B, S).
- `sliding_window_attention(q, k, v, window, key_padding_mask, backend)`: causal attention where position t sees keys
  t-window..t. Three interchangeable paths give the same numbers within fp32 tolerance:
    * "block": block-local SDPA. S is cut into blocks of `window` positions; each block attends to itself
      and the previous block under a banded mask, so memory is O(B*H*S*2W), never O(S^2). The default on
      every device.
    * "flex": FlexAttention with a cached block mask (CUDA only). Each SelfAttention module holds its
      backend (set per model from the config's `attention_backend`), so two models in one process can differ.
    * `dense_sliding_window_attention`: the O(S^2) masked reference, used by tests.
  Every path uses one softmax scale, 1/sqrt(d) (flex applies its own: it must not be scaled twice). A query
  always sees itself, so no row is fully masked and nothing is NaN, even in a window of padding; outputs at
  padded query positions are exact zeros.
- `segment_cross_attention(q, k, v, query_segments, row_valid, lookback, rows_per_segment)`: position t
  attends only to the code rows of its own segment and `lookback` earlier segments. It gathers those rows
  (B, H, S, (lookback+1)*L, d), so memory grows linearly with S.
- `KeyValueCache`: per-layer cache for step-by-step decoding with a sliding window.
  (model/ragged_cache.py: the same for independent rows that hold different numbers of positions.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ROPE_BASE = 10000.0

BACKENDS = ("block", "flex")  # block-local SDPA (any device), FlexAttention (CUDA only)


_INVERSE_FREQUENCIES: dict[tuple[int, torch.device], torch.Tensor] = {}


def rope_angles(positions: torch.Tensor, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation at `positions` (S,) or (B, S) for head dim d, as the two tables (S, 2h) or (B, 1, S, 2h), h =
    d // 2, that `rotate` multiplies by: [cos, cos] and [-sin, sin] of each channel pair's angle. Computed once
    per call site and shared by queries and keys; the frequencies are cached, since a decoding step would
    otherwise rebuild them for every layer."""
    half = d // 2
    key = (half, torch.device(device))
    inv_freq = _INVERSE_FREQUENCIES.get(key)
    if inv_freq is None:
        with torch.inference_mode(False):  # a normal tensor even when first built while decoding: training reads it
            inv_freq = ROPE_BASE ** (-torch.arange(0, half, device=device, dtype=torch.float32) / half)
        _INVERSE_FREQUENCIES[key] = inv_freq
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (S, d/2) or (B, S, d/2)
    cos, sin = angles.cos(), angles.sin()
    cos_table, sin_table = torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)
    if angles.dim() == 3:
        return cos_table[:, None], sin_table[:, None]  # (B, 1, S, d): broadcast over heads
    return cos_table, sin_table


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + d/2) of x (..., B, H, S, d) by the angles of `rope_angles` (in fp32):
    x * [cos, cos] + swapped * [-sin, sin], swapped being x with its two halves exchanged. The same floats as
    (x1 cos - x2 sin, x1 sin + x2 cos) (a negated product is exact; a sum does not depend on its order) in 4
    calls instead of 9: a decoding step rotates 13 times. Leading dims broadcast: queries and keys stacked
    (2, B, H, S, d) are rotated in one pass, the same numbers as apart."""
    d, dtype = x.shape[-1], x.dtype
    half = d // 2
    if dtype != torch.float32:
        x = x.float()
    pairs = x[..., : 2 * half] if d % 2 else x
    rotated = pairs * cos + torch.roll(pairs, half, dims=-1) * sin if half else pairs
    if d % 2:  # an odd last channel is not rotated
        rotated = torch.cat([rotated, x[..., 2 * half :]], dim=-1)
    return rotated if dtype == torch.float32 else rotated.to(dtype)


def apply_rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + d/2) of x (B, H, S, d) by angles positions * base^(-2i/d)."""
    return rotate(x, *rope_angles(positions, x.shape[-1], x.device))


def _zero_padded_queries(out: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    if key_padding_mask is None:
        return out
    return out.masked_fill(key_padding_mask[:, None, :, None], 0.0)


def dense_sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int | None,
    key_padding_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Reference: the full (S, S) mask. window=None means plain causal attention."""
    S = q.shape[-2]
    pos = torch.arange(S, device=q.device)
    delta = pos[:, None] - pos[None, :]  # query - key
    allowed = delta >= 0
    if window is not None:
        allowed = allowed & (delta <= window)
    allowed = allowed[None, None]  # (1, 1, S, S)
    if key_padding_mask is not None:
        # A padded key is hidden, except from itself, so every row keeps one key and softmax stays finite.
        allowed = allowed & (~key_padding_mask[:, None, None, :] | (delta == 0))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=q.shape[-1] ** -0.5)
    return _zero_padded_queries(out, key_padding_mask)


def block_local_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, key_padding_mask: torch.Tensor | None
) -> torch.Tensor:
    """Sliding-window causal attention in O(S * window) memory: blocks of `window` queries, 2*window keys."""
    B, H, S, d = q.shape
    W = window
    n_blocks = math.ceil(S / W)
    extra = n_blocks * W - S
    key_valid = torch.ones(B, S, dtype=torch.bool, device=q.device)
    if key_padding_mask is not None:
        key_valid = ~key_padding_mask
    if extra:
        q, k, v = (F.pad(t, (0, 0, 0, extra)) for t in (q, k, v))
        key_valid = F.pad(key_valid, (0, extra), value=False)

    def blocks(t: torch.Tensor) -> torch.Tensor:  # (B, H, nb*W, d) -> (B, nb, H, W, d)
        return t.reshape(B, H, n_blocks, W, d).transpose(1, 2)

    def with_previous_block(t: torch.Tensor) -> torch.Tensor:  # (B, nb, H, W, d) -> (B*nb, H, 2W, d)
        previous = F.pad(t, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1]
        return torch.cat([previous, t], dim=3).reshape(B * n_blocks, H, 2 * W, d)

    # Layout (B*nb, H, ...): the mask is per (batch, block) and broadcasts over heads.
    qb = blocks(q).reshape(B * n_blocks, H, W, d)
    kb, vb = with_previous_block(blocks(k)), with_previous_block(blocks(v))
    kv_valid = key_valid.reshape(B, n_blocks, W)
    kv_valid = torch.cat([F.pad(kv_valid, (0, 0, 1, 0), value=False)[:, :-1], kv_valid], dim=2)  # (B, nb, 2W)

    # Query i of a block sits at key index i + W of the concatenated (previous, own) keys; it sees i .. i + W.
    i = torch.arange(W, device=q.device)[:, None]
    j = torch.arange(2 * W, device=q.device)[None, :]
    band = (j >= i) & (j <= i + W)
    is_self = j == i + W
    allowed = band & (kv_valid[:, :, None, :] | is_self)  # (B, nb, W, 2W)

    out = F.scaled_dot_product_attention(
        qb, kb, vb, attn_mask=allowed.reshape(B * n_blocks, 1, W, 2 * W), scale=d**-0.5
    )  # (B*nb, H, W, d)
    out = out.reshape(B, n_blocks, H, W, d).transpose(1, 2).reshape(B, H, n_blocks * W, d)[:, :, :S]
    return _zero_padded_queries(out, key_padding_mask)


_FLEX = {}


def flex_sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int | None,
    key_padding_mask: torch.Tensor | None,
) -> torch.Tensor:
    """FlexAttention path (CUDA): same mask and scale as the block path. The padding-free mask is cached."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if "kernel" not in _FLEX:
        _FLEX["kernel"] = torch.compile(flex_attention, dynamic=False)
    B, _, S, d = q.shape
    span = S if window is None else window

    if key_padding_mask is None:
        key = (S, span, q.device)
        if key not in _FLEX:

            def keep(b, h, q_idx, kv_idx):
                return (kv_idx <= q_idx) & (q_idx - kv_idx <= span)

            _FLEX[key] = create_block_mask(keep, None, None, S, S, device=q.device)
        block_mask = _FLEX[key]
    else:
        pad = key_padding_mask

        def keep(b, h, q_idx, kv_idx):
            in_window = (kv_idx <= q_idx) & (q_idx - kv_idx <= span)
            return in_window & (~pad[b, kv_idx] | (q_idx == kv_idx))

        block_mask = create_block_mask(keep, B, None, S, S, device=q.device)
    out = _FLEX["kernel"](q, k, v, block_mask=block_mask, scale=d**-0.5)
    return _zero_padded_queries(out, key_padding_mask)


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int | None,
    key_padding_mask: torch.Tensor | None = None,
    backend: str = "block",
) -> torch.Tensor:
    """Causal attention over keys t-window..t (window=None: all earlier keys). Padded queries give zeros.
    backend "flex" uses FlexAttention on CUDA tensors; elsewhere, and for "block", the SDPA paths."""
    S = q.shape[-2]
    if backend == "flex" and q.is_cuda:
        return flex_sliding_window_attention(q, k, v, window, key_padding_mask)
    if window is None or window >= S - 1:
        if key_padding_mask is None or is_right_padding(key_padding_mask):
            # Plain causal attention: with padding only at the end, no real query can see a padded key, so
            # no mask is needed and SDPA can use its fused (flash) kernel: O(S) memory, not O(S^2).
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=q.shape[-1] ** -0.5)
            return _zero_padded_queries(out, key_padding_mask)
        return dense_sliding_window_attention(q, k, v, window, key_padding_mask)
    return block_local_attention(q, k, v, window, key_padding_mask)


def is_right_padding(key_padding_mask: torch.Tensor) -> bool:
    """True if every row's padding (True) comes after all of its real positions."""
    return bool((key_padding_mask[:, :-1] <= key_padding_mask[:, 1:]).all())


def _segment_slots(
    query_segments: torch.Tensor, memory_rows: int, lookback: int, rows_per_segment: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory rows each query (B, S) reads, oldest segment first: (B, S, R) row indices (0 where the slot's
    segment is before the first or past the memory) and (B, S, R) whether the slot's row exists."""
    B, S = query_segments.shape
    L = rows_per_segment
    offsets = torch.arange(lookback, -1, -1, device=query_segments.device)  # oldest segment first
    segments = query_segments[:, :, None] - offsets  # (B, S, lookback+1)
    rows = segments[..., None] * L + torch.arange(L, device=query_segments.device)  # (B, S, lookback+1, L)
    rows = rows.reshape(B, S, -1)  # (B, S, R)
    in_range = (segments[..., None] >= 0).expand(-1, -1, -1, L).reshape(B, S, -1) & (rows < memory_rows)
    return torch.where(in_range, rows, torch.zeros_like(rows)), in_range


def segment_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    query_segments: torch.Tensor,
    row_valid: torch.Tensor,
    lookback: int,
    rows_per_segment: int,
) -> torch.Tensor:
    """Each query attends to the code rows of its own segment and `lookback` earlier ones.

    q (B, H, S, d); k, v (B, H, M, d) with M = segments * rows_per_segment, row r belonging to segment
    r // rows_per_segment; query_segments (B, S) long, -1 for padding; row_valid (B, M) bool.
    Returns (B, H, S, d); a query with no visible row (padding) gets zeros.
    """
    B, H, S, d = q.shape
    safe_rows, in_range = _segment_slots(query_segments, k.shape[2], lookback, rows_per_segment)
    visible = in_range & torch.gather(row_valid, 1, safe_rows.reshape(B, -1)).reshape(B, S, -1)
    visible = visible & (query_segments >= 0)[..., None]

    index = safe_rows.reshape(B, 1, S * safe_rows.shape[-1], 1).expand(B, H, -1, d)
    k_rows = torch.gather(k, 2, index).reshape(B, H, S, -1, d)  # (B, H, S, R, d)
    v_rows = torch.gather(v, 2, index).reshape(B, H, S, -1, d)
    scores = torch.einsum("bhsd,bhsrd->bhsr", q, k_rows).float() * d**-0.5
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    any_visible = visible.any(-1)[:, None, :, None]  # (B, 1, S, 1)
    weights = torch.softmax(scores.masked_fill(~any_visible, 0.0), dim=-1)
    weights = (weights * any_visible).to(v.dtype)
    return torch.einsum("bhsr,bhsrd->bhsd", weights, v_rows)


_SEGMENT_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}


@dataclass
class SegmentStepReads:
    """What the cross-attention layers of one decoding step share (`segment_step_reads`): for each row, the
    memory rows its query reads (its own segment and `lookback` earlier ones, as `segment_cross_attention`
    gathers them), which of them exist, and the RoPE angles of the queries and of the memory rows."""

    rows: torch.Tensor  # (B, R) memory row gathered at each slot (0 where the slot's segment does not exist)
    visible: torch.Tensor  # (B, 1, R)
    query_rope: tuple[torch.Tensor, torch.Tensor]  # (B, 1, 1, 2 * (d // 2)) each
    memory_rope: tuple[torch.Tensor, torch.Tensor]  # (M, 2 * (d // 2)) each


def segment_step_reads(
    local_segments: torch.Tensor, memory_rows: int, lookback: int, rows_per_segment: int, d: int
) -> SegmentStepReads:
    """`SegmentStepReads` of one query per row at segment local_segments (B,) of memory rows 0..memory_rows-1,
    all valid, which hold at least the query's own segment (a decoding step passes the rows of its segments).
    The slots of each local segment, and the memory rows' angles, are computed once per shape: a decoding step
    would otherwise rebuild them in every layer. The same numbers as `segment_cross_attention`."""
    device = local_segments.device
    key = (memory_rows, lookback, rows_per_segment, d, device)
    if key not in _SEGMENT_TABLES:
        with torch.inference_mode(False):
            local = torch.arange(lookback + 1, device=device)[:, None]  # every local segment a query may have
            rows, in_range = _segment_slots(local, memory_rows, lookback, rows_per_segment)
            memory_rope = rope_angles(torch.arange(memory_rows, device=device) // rows_per_segment, d, device)
            _SEGMENT_TABLES[key] = (rows[:, 0], in_range[:, 0], *memory_rope)
    rows, visible, cos, sin = _SEGMENT_TABLES[key]
    return SegmentStepReads(
        rows[local_segments],
        visible[local_segments][:, None],
        rope_angles(local_segments[:, None], d, device),
        (cos, sin),
    )


def segment_cross_attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, reads: SegmentStepReads):
    """`segment_cross_attention` of one (rotated) query per row, q (B, H, 1, d), over k, v (B, H, M, d) (rotated
    keys): the same gathers and einsums, so the same numbers, without rebuilding the slots in every layer. Every
    query sees its own segment's rows, so no row of weights needs zeroing."""
    B, H, _, d = q.shape
    R = reads.rows.shape[1]
    index = reads.rows.reshape(B, 1, R, 1).expand(B, H, -1, d)
    k_rows = torch.gather(k, 2, index).reshape(B, H, 1, R, d)
    v_rows = torch.gather(v, 2, index).reshape(B, H, 1, R, d)
    scores = torch.einsum("bhsd,bhsrd->bhsr", q, k_rows).float() * d**-0.5
    weights = torch.softmax(scores.masked_fill(~reads.visible[:, None], float("-inf")), dim=-1)
    return torch.einsum("bhsr,bhsrd->bhsd", weights.to(v.dtype), v_rows)


@dataclass
class KeyValueCache:
    """Keys/values (B, H, T, d) of the positions decoded so far, trimmed to the last `window` + 1."""

    window: int | None
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    length: int = 0  # positions seen so far (the next position's index)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys = k if self.keys is None else torch.cat([self.keys, k], dim=2)
        self.values = v if self.values is None else torch.cat([self.values, v], dim=2)
        if self.window is not None and self.keys.shape[2] > self.window + 1:
            self.keys = self.keys[:, :, -(self.window + 1) :]
            self.values = self.values[:, :, -(self.window + 1) :]
        self.length += k.shape[2]
        return self.keys, self.values

    def rope(self, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotation tables (1, 2 * (d // 2)) of the next step's position, the same for every row
        (`rope_angles`)."""
        return rope_angles(torch.tensor([self.length], device=device), d, device)

    def append_step(self, k: torch.Tensor, v: torch.Tensor):
        """`append`, plus the attention mask of the step (None: every cached key is visible)."""
        return (*self.append(k, v), None)
