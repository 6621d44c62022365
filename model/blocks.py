"""Transformer building blocks: pre-RMSNorm, RoPE attention, SwiGLU, optional segment-aligned cross-attention.

Shapes: x (B, S, D); key_padding_mask (B, S) bool, True = padding; memory (B, M, D_mem) code rows with
memory_valid (B, M); query_segments (B, S) long (segment of each position, -1 for padding).

`TransformerBlock.forward` processes a whole sequence (training, teacher forcing); `TransformerBlock.step`
processes one new position per batch row against a `KeyValueCache` (generation). Both give the same numbers.

The layers' linear maps and the steps' norms are called as functions of their modules' weights (`_linear`,
`_norm`): the same arithmetic without nn.Module's call machinery, which was about 4% of a decoding step (nine
layer steps per token, each a few microseconds of arithmetic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.attention import (
    KeyValueCache,
    SegmentStepReads,
    apply_rope,
    rope_angles,
    rotate,
    segment_cross_attention,
    segment_cross_attention_step,
    sliding_window_attention,
)

if TYPE_CHECKING:
    from model.ragged_cache import RaggedCacheView

NORM_EPS = 1e-6


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def _norm(norm: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, norm.normalized_shape, norm.weight, norm.eps)


class SwiGLU(nn.Module):
    """Gated feed-forward: w_out(silu(a) * b) with [a, b] = w_in(x)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w_in = nn.Linear(dim, 2 * hidden_dim, bias=False)
        self.w_out = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = _linear(self.w_in, x).chunk(2, dim=-1)
        return _linear(self.w_out, F.silu(a) * b)


class SelfAttention(nn.Module):
    """Causal multi-head self-attention over keys t-window..t (window=None: all earlier keys), with RoPE."""

    def __init__(self, dim: int, heads: int, window: int | None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.window = heads, window
        self.backend = "block"  # the sliding-window kernel (model.attention.BACKENDS); the model sets it
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _split(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """q, k (rotated in one pass), v (B, H, S, d) of x (B, S, D)."""
        B, S, D = x.shape
        qkv = _linear(self.qkv, x).view(B, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotate(qkv[:2], cos, sin)
        return q, k, qkv[2]

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, S, D = x.shape
        q, k, v = self._split(x, *rope_angles(torch.arange(S, device=x.device), D // self.heads, x.device))
        out = sliding_window_attention(q, k, v, self.window, key_padding_mask, self.backend)
        return _linear(self.out, out.transpose(1, 2).reshape(B, S, D))

    def step(self, x: torch.Tensor, cache: KeyValueCache | RaggedCacheView) -> torch.Tensor:
        """x (B, 1, D) is the position after the cached ones (of each row, with a ragged cache)."""
        B, _, D = x.shape
        q, k, v = self._split(x, *cache.rope(D // self.heads, x.device))
        keys, values, mask = cache.append_step(k, v)
        # One query per row: two small batched matmuls beat SDPA's kernel at this shape on CPU (about 1.6x).
        scores = torch.matmul(q, keys.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, 1, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), values)
        return _linear(self.out, out.transpose(1, 2).reshape(B, 1, D))


class SegmentCrossAttention(nn.Module):
    """Position t reads the code rows of its own segment and `lookback` earlier segments (by segment id).

    RoPE positions are segment indices (queries: their segment; rows: the segment they encode), so a query can
    tell its own segment's code from the look-back ones.
    """

    def __init__(self, dim: int, memory_dim: int, heads: int, lookback: int, rows_per_segment: int):
        super().__init__()
        self.heads, self.lookback, self.rows_per_segment = heads, lookback, rows_per_segment
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(memory_dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_valid: torch.Tensor,
        query_segments: torch.Tensor,
    ) -> torch.Tensor:
        B, S, D = x.shape
        M = memory.shape[1]
        h, d = self.heads, D // self.heads
        q = _linear(self.q, x).view(B, S, h, d).transpose(1, 2)
        k, v = _linear(self.kv, memory).view(B, M, 2, h, d).permute(2, 0, 3, 1, 4)
        q = apply_rope(q, query_segments.clamp_min(0))
        k = apply_rope(k, torch.arange(M, device=x.device) // self.rows_per_segment)
        out = segment_cross_attention(q, k, v, query_segments, memory_valid, self.lookback, self.rows_per_segment)
        return _linear(self.out, out.transpose(1, 2).reshape(B, S, D))

    def step(self, x: torch.Tensor, memory: torch.Tensor, reads: SegmentStepReads) -> torch.Tensor:
        """`forward` of one position per row, x (B, 1, D), with the step's shared `reads` (`segment_step_reads`)."""
        B, _, D = x.shape
        M = memory.shape[1]
        h, d = self.heads, D // self.heads
        q = rotate(_linear(self.q, x).view(B, 1, h, d).transpose(1, 2), *reads.query_rope)
        k, v = _linear(self.kv, memory).view(B, M, 2, h, d).permute(2, 0, 3, 1, 4)
        out = segment_cross_attention_step(q, rotate(k, *reads.memory_rope), v, reads)
        return _linear(self.out, out.transpose(1, 2).reshape(B, 1, D))


class TransformerBlock(nn.Module):
    """x += SelfAttn(norm(x)); [x += CrossAttn(norm(x), memory)]; x += SwiGLU(norm(x))."""

    def __init__(
        self,
        dim: int,
        heads: int,
        window: int | None,
        ffn_multiplier: float,
        memory_dim: int | None = None,
        lookback: int = 1,
        rows_per_segment: int = 1,
    ):
        super().__init__()
        self.attn_norm = nn.RMSNorm(dim, eps=NORM_EPS)
        self.attn = SelfAttention(dim, heads, window)
        self.cross_norm = self.cross = None
        if memory_dim is not None:
            self.cross_norm = nn.RMSNorm(dim, eps=NORM_EPS)
            self.cross = SegmentCrossAttention(dim, memory_dim, heads, lookback, rows_per_segment)
        self.ffn_norm = nn.RMSNorm(dim, eps=NORM_EPS)
        self.ffn = SwiGLU(dim, max(1, int(dim * ffn_multiplier)))

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_valid: torch.Tensor | None = None,
        query_segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), key_padding_mask)
        if self.cross is not None:
            x = x + self.cross(self.cross_norm(x), memory, memory_valid, query_segments)
        x = x + self.ffn(self.ffn_norm(x))
        if key_padding_mask is not None:  # padded positions carry exact zeros, so nothing there can turn NaN
            x = x.masked_fill(key_padding_mask[..., None], 0.0)
        return x

    def step(
        self,
        x: torch.Tensor,
        cache: KeyValueCache | RaggedCacheView,
        memory: torch.Tensor | None = None,
        reads: SegmentStepReads | None = None,
    ) -> torch.Tensor:
        """One position per row; with cross-attention, memory (B, M, D_mem) and the step's `reads`."""
        x = x + self.attn.step(_norm(self.attn_norm, x), cache)
        if self.cross is not None:
            x = x + self.cross.step(_norm(self.cross_norm, x), memory, reads)
        return x + self.ffn(_norm(self.ffn_norm, x))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """nanoGPT-style init: normal(0, std) for linear and embedding weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
