"""One compression level: tokens -> entropy segments -> pooled vectors -> codes.

Shapes: tokens (B, S) long with key_padding_mask (B, S) (True = padding); D = level dim, V = input vocab,
L = num_queries, N = most segments in the batch.

    embedding -> shared sliding-window layers -+-> LM layers -> norm -> logits (B, S, V)    (aux LM loss)
                                               |      entropy of logits[t-1] -> segment_ids (B, S)
                                               +-> compression layers -> norm -> SegmentPooler -> (B, N*L, D)
                                                                                -> EmaVectorQuantizer -> codes

The LM branch is the entropy model; its loss is the auxiliary LM loss (with `expander_reads_lm_state` the
expander's reconstruction loss reaches it and the trunk too, through `lm_state`), and it can be frozen with the
base. The quantized straight-through vectors carry the reconstruction gradient back into the compression branch
and pooler (an encoder that gets no reconstruction gradient never learns to keep what the expander needs).
`lm_step` runs the trunk and LM branch one position at a time (generation recomputes boundaries with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from model.attention import KeyValueCache
from model.blocks import NORM_EPS, TransformerBlock
from model.pooling import SegmentPooler
from model.quantizer import EmaVectorQuantizer
from model.segmentation import EntropySegmenter, predictive_entropy

if TYPE_CHECKING:
    from configs import CompressorLevelConfig


@dataclass
class CompressorOutput:
    tokens: torch.Tensor  # (B, S) input ids of this level
    key_padding_mask: torch.Tensor  # (B, S) True = padding
    lm_logits: torch.Tensor  # (B, S, V): logits[:, t] predicts tokens[:, t+1]
    lm_state: torch.Tensor  # (B, S, D): the normed LM-branch output the logits are read from (tokens <= t)
    segment_ids: torch.Tensor  # (B, S), -1 at padding
    pre_vq: torch.Tensor  # (B, N*L, D) pooled vectors
    quantized: torch.Tensor  # (B, N*L, D) straight-through quantized vectors (0 at invalid rows)
    codes: torch.Tensor  # (B, N*L) long (0 at invalid rows)
    row_valid: torch.Tensor  # (B, N*L) bool
    vq_loss: torch.Tensor
    compression_ratio: torch.Tensor  # mean over rows of (valid code rows / real input tokens)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class Compressor(nn.Module):
    def __init__(self, level_config: CompressorLevelConfig, vocab_size: int):
        super().__init__()
        c = level_config
        self.vocab_size, self.dim, self.num_queries = vocab_size, c.dim, c.num_queries
        window = c.window
        mult = c.encoder_ffn_dim_multiplier

        def stack(n: int) -> nn.ModuleList:
            return nn.ModuleList(TransformerBlock(c.dim, c.heads, window, mult) for _ in range(n))

        self.embedding = nn.Embedding(vocab_size, c.dim)
        self.shared_layers = stack(c.num_shared_encoder_layers)
        self.lm_layers = stack(c.lm_layers)
        self.lm_norm = nn.RMSNorm(c.dim, eps=NORM_EPS)
        self.lm_head = nn.Linear(c.dim, vocab_size, bias=False)
        self.compression_layers = stack(c.compression_layers)
        self.compression_norm = nn.RMSNorm(c.dim, eps=NORM_EPS)
        self.pooler = SegmentPooler(c.dim, c.heads, c.num_queries)
        self.quantizer = EmaVectorQuantizer(
            c.codebook_size, c.dim, beta=c.beta, decay=c.vq_decay, reset_interval=c.vq_reset_interval
        )
        self.segmenter = EntropySegmenter(
            c.entropy_delta, c.entropy_abs_threshold, c.min_segment_len, c.max_segment_len
        )

    def forward(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> CompressorOutput:
        kpm = key_padding_mask if key_padding_mask is not None else torch.zeros_like(tokens, dtype=torch.bool)
        x = self._trunk(tokens, kpm)
        lm_x = x
        for layer in self.lm_layers:
            lm_x = layer(lm_x, kpm)
        lm_state = self.lm_norm(lm_x)
        lm_logits = self.lm_head(lm_state)
        segment_ids = self.segmenter.segment(predictive_entropy(lm_logits), kpm)
        pooled, row_valid = self._pool(x, kpm, segment_ids)
        q = self.quantizer(pooled, row_valid)

        real = (~kpm).sum(1).clamp_min(1)
        ratio = (row_valid.sum(1).float() / real).mean()
        return CompressorOutput(
            tokens=tokens,
            key_padding_mask=kpm,
            lm_logits=lm_logits,
            lm_state=lm_state,
            segment_ids=segment_ids,
            pre_vq=pooled,
            quantized=q.quantized,
            codes=q.codes,
            row_valid=row_valid,
            vq_loss=q.loss,
            compression_ratio=ratio,
            metrics=q.metrics,
        )

    def _trunk(self, tokens: torch.Tensor, kpm: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)
        for layer in self.shared_layers:
            x = layer(x, kpm)
        return x

    def _pool(self, trunk: torch.Tensor, kpm: torch.Tensor, segment_ids: torch.Tensor):
        h = trunk
        for layer in self.compression_layers:
            h = layer(h, kpm)
        return self.pooler(self.compression_norm(h), segment_ids)

    @torch.no_grad()
    def pooled_vectors(self, tokens: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
        """The pre-VQ pooled rows (B, N*L, D) of tokens (B, S) cut into the given segments (B, S), no padding.

        A decoder calls this on the tokens it has decoded, with the boundaries it recomputed: the layers are
        causal and each row pools only its own segment, so the rows of closed segments equal `forward`'s
        `pre_vq` rows over any longer text that starts with these tokens."""
        kpm = torch.zeros_like(tokens, dtype=torch.bool)
        return self._pool(self._trunk(tokens, kpm), kpm, segment_ids)[0]

    def new_caches(self) -> list[KeyValueCache]:
        layers = list(self.shared_layers) + list(self.lm_layers)
        return [KeyValueCache(layer.attn.window) for layer in layers]

    def new_pooling_caches(self) -> list[KeyValueCache]:
        """Caches of the compression layers, for `lm_step`'s pooling input."""
        return [KeyValueCache(layer.attn.window) for layer in self.compression_layers]

    @torch.no_grad()
    def lm_step(
        self, token: torch.Tensor, caches: list[KeyValueCache], pooling_caches: list[KeyValueCache] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Feed one token per row (B,); returns the LM logits (B, V) for the next position and the LM state
        (B, D) they are read from (`forward`'s lm_state at this position). With `pooling_caches`
        (`new_pooling_caches`) also the pooler's input (B, D) at this position (the compression branch, normed),
        so a decoder pools a closed segment from its own positions (`pool_segments`) instead of re-running the
        trunk over everything decoded."""
        x = self.embedding(token)[:, None]
        shared = len(self.shared_layers)
        for layer, cache in zip(self.shared_layers, caches[:shared], strict=True):
            x = layer.step(x, cache)
        trunk = x
        for layer, cache in zip(self.lm_layers, caches[shared:], strict=True):
            x = layer.step(x, cache)
        state = self.lm_norm(x)[:, 0]
        if pooling_caches is None:
            return self.lm_head(state), state
        for layer, cache in zip(self.compression_layers, pooling_caches, strict=True):
            trunk = layer.step(trunk, cache)
        return self.lm_head(state), state, self.compression_norm(trunk)[:, 0]

    @torch.no_grad()
    def pool_segments(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The pooled (pre-VQ) rows (B, L, D) of one segment per batch row, from its pooler inputs hidden
        (B, S, D) (`lm_step`'s third output at the segment's positions), valid (B, S) where a row is shorter."""
        segment_ids = torch.where(valid, 0, -1)
        return self.pooler(hidden, segment_ids)[0]
