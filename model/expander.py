"""Expander: reconstruct one level's token sequence from that level's code rows (its compressor's output).

Shapes: targets (B, S) long, key_padding_mask (B, S), segment_ids (B, S) (the compressor's segmentation of
these tokens, -1 at padding); memory (B, M, D_mem) code rows with memory_valid (B, M), M = segments * L.

Teacher forcing: the input at position t is a learned start vector (t = 0) or the embedding of targets[t-1];
logits[:, t] predict targets[:, t]. Self-attention is causal (sliding window); cross-attention at position t
sees only the code rows of segment segment_ids[t] and `lookback` earlier segments, found by segment id, not by
raw index (an index says nothing of which bytes a row covers). Because segment_ids[t] depends only on tokens
< t (causal entropy rule), a decoder can always tell which rows position t may read.

With `lm_state_dim` set (config `expander_reads_lm_state`), the input at t >= 1 also adds a projection of the
compressor's entropy-model state at t-1, which has read targets[:t] only: a decoder computes that state anyway
(it recomputes the boundaries from it), and the expander starts from the entropy model's features instead of
learning its own byte LM from scratch.

With `top_state_dim` set (config `expander_reads_top_state`, the top level's expander only), the input at every
position t also adds a projection of the top LM's state for t's segment, top_state[:, t] = h[:, segment_ids[t] * L]
(`CodeSequenceTransformer.hidden_states`): the state that predicts the segment's first code, which has read codes
and pooled vectors of earlier segments only (BLT's local decoder reading the global model, MegaByte's global
output conditioning its local model). The caller gathers it (`HierarchicalAutoencoder.top_state_per_position`);
a decoder has it when the segment opens, since it asks the top LM for that segment's first code then.

The memory is the quantizer's straight-through output, so reconstruction gradients reach the compressor.
`step` decodes one position per row with KV caches (generation, greedy reconstruction).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from model.attention import KeyValueCache, segment_step_reads
from model.blocks import NORM_EPS, TransformerBlock


class Expander(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        memory_dim: int,
        dim: int,
        heads: int,
        num_layers: int,
        window: int,
        lookback: int,
        rows_per_segment: int,
        ffn_multiplier: float = 4.0,
        lm_state_dim: int | None = None,
        top_state_dim: int | None = None,
    ):
        super().__init__()
        self.vocab_size, self.lookback, self.rows_per_segment = vocab_size, lookback, rows_per_segment
        self.start = nn.Parameter(torch.randn(dim) * 0.02)
        self.embedding = nn.Embedding(vocab_size, dim)
        self.lm_state_proj = nn.Linear(lm_state_dim, dim, bias=False) if lm_state_dim else None
        self.top_state_proj = nn.Linear(top_state_dim, dim, bias=False) if top_state_dim else None
        self.memory_norm = nn.RMSNorm(memory_dim, eps=NORM_EPS)
        self.layers = nn.ModuleList(
            TransformerBlock(dim, heads, window, ffn_multiplier, memory_dim, lookback, rows_per_segment)
            for _ in range(num_layers)
        )
        self.norm = nn.RMSNorm(dim, eps=NORM_EPS)
        self.head = nn.Linear(dim, vocab_size, bias=False)

    def forward(
        self,
        targets: torch.Tensor,
        key_padding_mask: torch.Tensor,
        segment_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_valid: torch.Tensor,
        lm_state: torch.Tensor | None = None,
        top_state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits (B, S, V); lm_state (B, S, D_lm) the compressor's, when the expander reads it;
        top_state (B, S, D_top) the top LM's state of each position's segment, when it reads that."""
        B = targets.shape[0]
        previous = self._input(targets[:, :-1], None if lm_state is None else lm_state[:, :-1])
        x = torch.cat([self.start.expand(B, 1, -1).to(previous.dtype), previous], dim=1)
        x = self._with_top_state(x, top_state)
        memory = self.memory_norm(memory)
        for layer in self.layers:
            x = layer(x, key_padding_mask, memory, memory_valid, segment_ids)
        return self.head(self.norm(x))

    def _input(self, previous_tokens: torch.Tensor, lm_state: torch.Tensor | None) -> torch.Tensor:
        """Input vectors for the positions after the given previous tokens (and the LM state at them)."""
        x = self.embedding(previous_tokens)
        if self.lm_state_proj is None:
            return x
        if lm_state is None:
            raise ValueError("this expander reads the compressor's LM state; none was given")
        return x + self.lm_state_proj(lm_state)

    def _with_top_state(self, x: torch.Tensor, top_state: torch.Tensor | None) -> torch.Tensor:
        """x (B, S, dim) plus the projected top LM state of each position's segment (when this expander reads it)."""
        if self.top_state_proj is None:
            return x
        if top_state is None:
            raise ValueError("this expander reads the top LM's state (expander_reads_top_state); none was given")
        return x + self.top_state_proj(top_state)

    def new_caches(self) -> list[KeyValueCache]:
        return [KeyValueCache(layer.attn.window) for layer in self.layers]

    @torch.no_grad()
    def step(
        self,
        previous_token: torch.Tensor | None,
        segment: torch.Tensor,
        memory: torch.Tensor,
        first_segment: int,
        caches: list[KeyValueCache],
        lm_state: torch.Tensor | None = None,
        top_state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One position per row: previous_token (B,) (None at position 0), segment (B,) its segment index,
        memory (B, M', D_mem) the rows of segments first_segment.. (at least those it may see), lm_state
        (B, D_lm) the compressor's LM state after previous_token (when the expander reads it), top_state
        (B, D_top) the top LM's state of this position's segment (when it reads that). Returns logits (B, V)."""
        if previous_token is None:
            x = self.start.expand(segment.shape[0], 1, -1)
        else:
            x = self._input(previous_token[:, None], None if lm_state is None else lm_state[:, None])
        x = self._with_top_state(x, None if top_state is None else top_state[:, None])
        memory = self.memory_norm(memory)
        cross = self.layers[0].cross
        reads = segment_step_reads(
            segment - first_segment, memory.shape[1], self.lookback, self.rows_per_segment, x.shape[-1] // cross.heads
        )
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer.step(x, cache, memory, reads)
        return self.head(self.norm(x))[:, 0]
