"""Learned-query segment pooling: `num_queries` learned queries per segment attend to its positions.

Shapes: hidden (B, S, D); segment_ids (B, S) long, -1 at padding; output rows (B, N * L, D) where N is the
largest segment count in the batch and row s * L + l is query l of segment s; row_valid (B, N * L).

The same L queries serve every segment, so the attention scores are one (B, S, L, H) tensor and the
per-segment softmax is a segment-sum: scatter-max for stability, exp, scatter-add of weights and of weighted
values. Memory is O(B * S * L * D); no (B*H, N*L, S) mask is ever built. Padding never contributes, and a row
whose segment does not exist (beyond the row's segment count) is exactly zero and marked invalid. Valid rows
are RMS-normalised (no learned gain), so the code vectors keep one scale throughout training.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.blocks import NORM_EPS


class SegmentPooler(nn.Module):
    def __init__(self, dim: int, heads: int, num_queries: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.num_queries = heads, num_queries
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.norm = nn.RMSNorm(dim, eps=NORM_EPS)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, hidden: torch.Tensor, segment_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns pooled rows (B, N*L, D) and row_valid (B, N*L)."""
        B, S, D = hidden.shape
        L, h = self.num_queries, self.heads
        d = D // h
        segments_per_row = (segment_ids.max(dim=1).values + 1).clamp_min(0) if S else torch.zeros(B).long()
        N = max(1, int(segments_per_row.max())) if B else 1

        k, v = self.kv(self.norm(hidden)).view(B, S, 2, h, d).unbind(2)  # (B, S, h, d) each
        q = self.queries.view(L, h, d)
        scores = torch.einsum("bshd,lhd->bslh", k, q).float() * d**-0.5  # (B, S, L, h)

        real = segment_ids >= 0
        slot = torch.where(real, segment_ids, torch.full_like(segment_ids, N))  # padding -> a spare slot N
        index = slot[:, :, None, None].expand(B, S, L, h)
        seg_max = torch.full((B, N + 1, L, h), float("-inf"), device=hidden.device)
        seg_max = seg_max.scatter_reduce(1, index, scores.detach(), reduce="amax", include_self=True)
        weights = torch.exp(scores - torch.gather(seg_max, 1, index)) * real[:, :, None, None]
        denom = torch.zeros(B, N + 1, L, h, device=hidden.device).scatter_add(1, index, weights)
        weighted = weights[..., None] * v[:, :, None].float()  # (B, S, L, h, d)
        numer = torch.zeros(B, N + 1, L, h, d, device=hidden.device).scatter_add(
            1, index[..., None].expand(B, S, L, h, d), weighted
        )
        pooled = numer[:, :N] / denom[:, :N, ..., None].clamp_min(1e-30)  # (B, N, L, h, d); empty slots 0/eps=0
        pooled = self.out(pooled.reshape(B, N * L, D).to(hidden.dtype))
        # Fixed scale (RMS 1): the quantizer and the top LM see vectors whose scale cannot drift with training.
        pooled = F.rms_norm(pooled, (D,), eps=NORM_EPS)

        segment_valid = torch.arange(N, device=hidden.device)[None, :] < segments_per_row[:, None]  # (B, N)
        row_valid = segment_valid.repeat_interleave(L, dim=1)
        return pooled * row_valid[..., None], row_valid
