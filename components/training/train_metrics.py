"""Turn the model's forward outputs into the seed's MLflow metric names, averaged over an optimizer step.

Seed names kept: loss/total_avg_accum, loss/reconstruction_avg_accum, loss/vq_avg_accum, loss/aux_lm_avg_accum,
loss/top_code_lm_avg_accum, compression_avg/ratio_L{i}, vq_metrics_avg/perplexity_L{i},
vq_metrics/codebook_size_L{i}, learning_rate, performance/tokens_per_sec.
Ours: vq_metrics/ema_perplexity_L{i}, vq_metrics/live_codes_L{i} (codes used in the quantizer's recent window),
vq_metrics/resets_L{i} (dead codes reset so far): the codebook's state after the step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from model.outputs import AutoencoderOutput

_LOSS_KEYS = {
    "total_loss": "loss/total_avg_accum",
    "avg_reconstruction_loss": "loss/reconstruction_avg_accum",
    "vq_loss": "loss/vq_avg_accum",
    "avg_aux_lm_loss": "loss/aux_lm_avg_accum",
    "avg_top_code_lm_loss": "loss/top_code_lm_avg_accum",
}
_CODEBOOK_STATE_KEYS = {
    "all_smoothed_perplexities": "ema_perplexity",
    "live_codes": "live_codes",
    "code_resets": "resets",
}


def _as_float(value) -> float:
    return float(value.detach().float().mean().item()) if isinstance(value, torch.Tensor) else float(value)


def _per_level(values) -> Sequence[float]:
    if isinstance(values, torch.Tensor):
        return [float(v) for v in values.detach().float().flatten().tolist()]
    return [_as_float(v) for v in values]


class StepMetrics:
    """Accumulates micro-batch outputs; `averages()` gives one value per metric for the optimizer step."""

    def __init__(self, codebook_sizes: Sequence[int]):
        self.codebook_sizes = list(codebook_sizes)
        self._sums: dict[str, float] = defaultdict(float)
        self._last: dict[str, float] = {}
        self._count = 0

    def add(self, outputs: AutoencoderOutput) -> None:
        self._count += 1
        for key, name in _LOSS_KEYS.items():
            if getattr(outputs, key, None) is not None:
                self._sums[name] += _as_float(getattr(outputs, key))
        for level, ratio in enumerate(_per_level(outputs.compression_ratios)):
            self._sums[f"compression_avg/ratio_L{level}"] += ratio
        for level, perplexity in enumerate(_per_level(outputs.all_codebook_perplexities)):
            self._sums[f"vq_metrics_avg/perplexity_L{level}"] += perplexity
        # The codebook's state after the step (not averaged: the last micro-batch's value is the current one).
        # Falling EMA perplexity or live codes, and resets that keep coming, are the early signs of collapse.
        for key, name in _CODEBOOK_STATE_KEYS.items():
            for level, value in enumerate(_per_level(getattr(outputs, key))):
                self._last[f"vq_metrics/{name}_L{level}"] = value

    def averages(self) -> dict[str, float]:
        result = {name: total / max(self._count, 1) for name, total in self._sums.items()}
        result.update(self._last)
        for level, size in enumerate(self.codebook_sizes):
            result[f"vq_metrics/codebook_size_L{level}"] = float(size)
        return result

    def reset(self) -> None:
        self._sums.clear()
        self._last.clear()
        self._count = 0
