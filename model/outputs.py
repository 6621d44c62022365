"""Typed results of the autoencoder: `CompressedText` (model.compress) and `AutoencoderOutput` (model.forward).

Shapes as in model/autoencoder.py: lists are ordered by level, bottom (bytes) first. Both are registered as
pytree nodes, so DistributedDataParallel (components/training/train.py, find_unused_parameters=True) sees every tensor
in them, as it did in the dicts they replace.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree

from model.compressor import CompressorOutput


@dataclass
class CompressedText:
    """Every compression level's output for one batch, bottom first."""

    levels: list[CompressorOutput]

    @property
    def codes(self) -> list[torch.Tensor]:  # (B, N_i * L_i) per level
        return [level.codes for level in self.levels]

    @property
    def segment_ids(self) -> list[torch.Tensor]:  # (B, S_i) per level
        return [level.segment_ids for level in self.levels]

    @property
    def key_padding_masks(self) -> list[torch.Tensor]:  # of each level's input
        return [level.key_padding_mask for level in self.levels]

    @property
    def row_valid(self) -> list[torch.Tensor]:  # of each level's codes
        return [level.row_valid for level in self.levels]

    @property
    def compression_ratios(self) -> list[torch.Tensor]:
        return [level.compression_ratio for level in self.levels]

    @property
    def top_codes(self) -> torch.Tensor:
        return self.levels[-1].codes

    @property
    def top_valid(self) -> torch.Tensor:
        return self.levels[-1].row_valid


@dataclass
class AutoencoderOutput:
    """The training objective and what training logs. Losses are scalars (mean CE in nats per position)."""

    total_loss: torch.Tensor
    avg_reconstruction_loss: torch.Tensor
    reconstruction_losses: list[torch.Tensor]
    reconstruction_accuracies: list[torch.Tensor]
    vq_loss: torch.Tensor
    avg_aux_lm_loss: torch.Tensor
    aux_lm_losses: list[torch.Tensor]
    avg_top_code_lm_loss: torch.Tensor
    all_codebook_perplexities: list[torch.Tensor]  # of this batch's codes
    all_smoothed_perplexities: list[torch.Tensor]  # the quantizers' EMA perplexity
    live_codes: list[torch.Tensor]
    code_resets: list[torch.Tensor]
    reconstruction_logits: list[torch.Tensor]  # (B, S_i, V_i) per level
    compressed: CompressedText
    top_code_accuracy: torch.Tensor | None = None  # a discrete top LM's next-code accuracy

    @property
    def compression_ratios(self) -> list[torch.Tensor]:
        return self.compressed.compression_ratios


for _cls in (CompressorOutput, CompressedText, AutoencoderOutput):
    pytree.register_dataclass(_cls)
