"""The promotion rule of the registry gate, as a pure function of two metrics dicts (no MLflow here).

A challenger becomes champion when it passes the absolute checks (a bits-per-byte ceiling, a minimum share of
live codes at every level, optional exact-reconstruction floor) and, if there is a champion, beats it on the
metric (lower is better: bits per byte) by at least `min_improvement`. Every failed check is a reason, so a
refusal says everything that was wrong, not only the first thing.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

LIVE_SHARE_PREFIX = "live_code_share_L"


class GateRules(BaseModel):
    """What a challenger must show. The same fields are kfp pipeline parameters and CLI flags."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field("test_bits_per_byte", description="Lower is better; compared with the champion's.")
    min_improvement: float = Field(0.01, ge=0, description="Margin (in metric units) to beat the champion by.")
    max_bits_per_byte: float | None = Field(8.0, gt=0, description="Ceiling on the metric (8.0: uniform bytes).")
    min_live_code_share: float = Field(0.0, ge=0, le=1, description="Every level's live codebook share >= this.")
    min_exact_match: float | None = Field(
        None, ge=0, le=1, description="Floor on reconstruction_exact_match_bytes (None: not checked)."
    )


class GateDecision(BaseModel):
    promote: bool
    reasons: list[str]

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def _value(metrics: dict[str, float], key: str) -> float | None:
    value = metrics.get(key)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def absolute_problems(metrics: dict[str, float], rules: GateRules) -> list[str]:
    """Why these metrics fail the absolute checks (empty: they pass)."""
    problems = []
    value = _value(metrics, rules.metric)
    if value is None:
        problems.append(f"{rules.metric} missing from the challenger's metrics")
    elif rules.max_bits_per_byte is not None and value > rules.max_bits_per_byte:
        problems.append(f"{rules.metric} {value:.4f} above the ceiling {rules.max_bits_per_byte:.4f}")
    shares = {k: v for k, v in metrics.items() if k.startswith(LIVE_SHARE_PREFIX)}
    if rules.min_live_code_share > 0 and not shares:
        problems.append("no live_code_share_L* metric to check")
    for key, share in sorted(shares.items()):
        if float(share) < rules.min_live_code_share:
            problems.append(f"{key} {float(share):.3f} below {rules.min_live_code_share:.3f}")
    if rules.min_exact_match is not None:
        exact = _value(metrics, "reconstruction_exact_match_bytes")
        if exact is None or exact < rules.min_exact_match:
            problems.append(f"reconstruction_exact_match_bytes {exact} below {rules.min_exact_match}")
    return problems


def decide(challenger: dict[str, float], champion: dict[str, float] | None, rules: GateRules) -> GateDecision:
    """Promote or refuse `challenger` against `champion` (None: there is no champion yet)."""
    reasons = absolute_problems(challenger, rules)
    value = _value(challenger, rules.metric)
    if champion is not None and value is not None:
        best = _value(champion, rules.metric)
        if best is None:
            reasons.append(f"the champion has no {rules.metric}: not comparable")
        elif value > best - rules.min_improvement:
            reasons.append(
                f"{rules.metric} {value:.4f} does not beat the champion's {best:.4f} by {rules.min_improvement}"
            )
        elif not reasons:
            return GateDecision(promote=True, reasons=[f"{rules.metric} {value:.4f} beats {best:.4f}"])
    if reasons:
        return GateDecision(promote=False, reasons=reasons)
    return GateDecision(promote=True, reasons=[f"first champion: {rules.metric} {value:.4f} passes the checks"])
