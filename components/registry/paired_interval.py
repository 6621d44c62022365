"""The paired comparison the gate decides on: challenger and champion scored on the same blocks of bytes, and a
seeded paired bootstrap confidence interval on the challenger-minus-champion bits per byte.

A block is one scoring window of one text (the test split or a golden text): both models code the same bytes
in it, so its difference in bits is a paired observation. The statistic is the difference of the two models'
bits per byte over all blocks, sum(challenger bits - champion bits) / sum(bytes) (a ratio estimator, so long
blocks weigh as much as their bytes); `scipy.stats.bootstrap` resamples whole blocks with the pairs kept
together (paired=True) and a fixed seed, so the same bits give the same interval on every machine.
Negative is better for the challenger. The evaluation step computes this (pipelines/paired_evaluation.py) and
signs it into its attestation, with the sha256 of the per-block bits (`paired_bits.json`); a gate configured at
another confidence recomputes the interval from those bits (paired_from_bits), checked against that hash.

Blocks are resampled one by one, not whole documents: neighbouring windows of one text are correlated, so the
interval is somewhat narrower than a document-level (cluster) bootstrap's; but the demo's and CI's test splits
give a handful of documents cut into many windows, where a cluster bootstrap would have too few clusters to
decide anything. GateRules.min_blocks refuses evidence of too few blocks (2 blocks: the interval is [min, max]).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


class PairedResult(BaseModel):
    """Both models' bits per byte on the same blocks and the interval on their difference."""

    model_config = ConfigDict(extra="forbid")

    champion_version: str
    challenger_bits_per_byte: float
    champion_bits_per_byte: float
    difference: float = Field(description="challenger - champion bits per byte (negative: the challenger is better)")
    low: float
    high: float
    confidence: float
    blocks: int
    bytes: int
    seed: int
    resamples: int

    def interval_text(self) -> str:
        return (
            f"challenger - champion {self.difference:+.4f} bits per byte, {self.confidence:.0%} interval "
            f"[{self.low:+.4f}, {self.high:+.4f}] over {self.blocks} blocks ({self.bytes} bytes)"
        )


def paired_interval(
    challenger_bits: list[float],
    champion_bits: list[float],
    block_bytes: list[int],
    champion_version: str,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
) -> PairedResult:
    """The paired result of per-block bits of both models on the same blocks (see the module docstring)."""
    from scipy.stats import bootstrap

    challenger, champion = np.asarray(challenger_bits, float), np.asarray(champion_bits, float)
    sizes = np.asarray(block_bytes, float)
    if not (len(challenger) == len(champion) == len(sizes)) or len(sizes) == 0 or sizes.sum() <= 0:
        raise ValueError("paired blocks: both models need bits for the same, non-empty blocks")
    total = float(sizes.sum())
    difference = float((challenger - champion).sum() / total)
    low = high = math.nan
    if len(sizes) >= 2:

        def statistic(diff, size, axis=-1):
            return diff.sum(axis=axis) / size.sum(axis=axis)

        with warnings.catch_warnings():  # identical models: a degenerate (all-equal) distribution is fine here
            warnings.simplefilter("ignore")
            found = bootstrap(
                (challenger - champion, sizes),
                statistic,
                paired=True,
                vectorized=True,
                n_resamples=resamples,
                confidence_level=confidence,
                method="percentile",
                rng=np.random.default_rng(seed),
            ).confidence_interval
        low, high = float(found.low), float(found.high)
    if math.isnan(low) or math.isnan(high):  # too few blocks to say anything: an interval that decides nothing
        low, high = -math.inf, math.inf
    return PairedResult(
        champion_version=str(champion_version),
        challenger_bits_per_byte=float(challenger.sum() / total),
        champion_bits_per_byte=float(champion.sum() / total),
        difference=difference,
        low=low,
        high=high,
        confidence=confidence,
        blocks=len(sizes),
        bytes=int(total),
        seed=seed,
        resamples=resamples,
    )


def paired_from_bits(paired_bits: dict, champion_version: str, confidence: float, seed: int, resamples: int):
    """The paired result recomputed from an evaluation's `paired_bits.json` ({"blocks": {text: {"bytes_bits":
    [[bytes, bits], ...], "champion": [[bytes, bits], ...]}}}) at `confidence`: the gate's own level, whatever
    level the evaluation wrote. ValueError when the file holds no champion bits or the windows differ."""
    challenger, champion, sizes = [], [], []
    for name, block in sorted(paired_bits.get("blocks", {}).items()):
        ours, theirs = block.get("bytes_bits") or [], block.get("champion")
        if theirs is None or len(ours) != len(theirs) or any(a[0] != b[0] for a, b in zip(ours, theirs, strict=True)):
            raise ValueError(f"paired bits of {name}: no champion bits on the same windows")
        sizes += [int(a[0]) for a in ours]
        challenger += [float(a[1]) for a in ours]
        champion += [float(b[1]) for b in theirs]
    return paired_interval(challenger, champion, sizes, champion_version, confidence, seed, resamples)
