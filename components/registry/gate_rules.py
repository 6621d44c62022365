"""The promotion rule of the registry gate, as a pure function of what the signed evidence says (no MLflow here).

Every decision is made here: already champion, evidence refused, rolled back earlier, forced, promoted, refused.
A challenger becomes champion when its evidence verified, it passes the absolute checks (a bits-per-byte
ceiling, a minimum share of live codes at every level, optional exact-reconstruction floor) and, if there is a
champion, the evaluation scored that very champion (its version and its attested weights) beside it on the
same bytes and the paired interval on challenger-minus-champion bits per byte lies wholly below
`-min_improvement` (components/registry/paired_interval.py).
An interval that straddles it is "too close to call": a refusal that prints the interval; one resting on fewer
than `min_blocks` blocks is refused. Without a champion, only a version whose evaluation found no champion
either becomes the first champion: evidence that names a scored champion (or a champion it could not score)
is a comparison, and the missing alias does not turn it into a first-champion pass. Every failed check is
a reason, so a refusal says everything that was wrong, not only the first thing.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from components.registry.paired_interval import PairedResult
from configs.errors import UserError
from configs.loading import describe_validation_error

LIVE_SHARE_PREFIX = "live_code_share_L"
OFF_WORDS = ("none", "off")


class GateRules(BaseModel):
    """What a challenger must show: the one source of the gate's rules. Each field is a flag of `registry promote`
    and `pipeline run-local` (abstractinator/flags.py generates them from these fields), a key of params.yaml's
    `gate` section, and a key of the kfp pipeline's one `gate_rules` dict parameter (validated by
    `rules_from_parameter` in the promote task), so no rule can be unreachable."""

    # No NaN or infinity, and upper ends on every number: beyond them a value means nothing (a bits-per-byte figure
    # of an untrained model can exceed 8, never 64), so a typo like 1e6, whether a flag or a key of the pipeline's
    # dict, is refused rather than silently passing or failing every version.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: str = Field(
        "test_bits_per_byte", description="The metric of the absolute checks: a <text>_bits_per_byte (lower is better)."
    )
    min_improvement: float = Field(
        0.01, ge=0, le=64, description="Bits per byte the whole paired interval must lie below the champion by."
    )
    max_bits_per_byte: float | None = Field(8.0, gt=0, le=64, description="Ceiling on the metric (8.0: uniform bytes).")
    min_live_code_share: float = Field(0.0, ge=0, le=1, description="Every level's live codebook share >= this.")
    min_exact_match: float | None = Field(
        None, ge=0, le=1, description="Floor on reconstruction_exact_match_bytes (None: not checked)."
    )
    confidence: float = Field(
        0.95,
        ge=0.8,  # below, the interval shrinks toward a point and "noise-aware" means nothing; --force is the override
        lt=1,
        description="Confidence level of the paired interval (the gate recomputes it at this level).",
    )
    min_blocks: int = Field(
        10,
        ge=2,
        le=1_000_000,
        description="Fewest paired blocks (scoring windows) the interval may rest on; fewer: refused.",
    )

    @field_validator("metric")
    @classmethod
    def _lower_is_better(cls, value: str) -> str:
        """Only a bits-per-byte metric: the absolute checks treat lower as better (a share of live codes as the
        metric would pass every ceiling)."""
        if not value.endswith("_bits_per_byte"):
            raise ValueError(f"must be a <text>_bits_per_byte metric (lower is better), not {value!r}")
        return value

    @field_validator("max_bits_per_byte", "min_exact_match", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        """The words "none" and "off" turn an optional rule off, as null does (kfp parameters cannot hold null)."""
        return None if isinstance(value, str) and value.strip().lower() in OFF_WORDS else value

    def as_parameter(self) -> dict[str, object]:
        """The rules as the kfp pipeline's `gate_rules` value: every field, a rule that is off as "none" (kfp
        refuses None in a dict parameter: kfp 2.x kfp/compiler/pipeline_spec_builder.py `to_protobuf_value`)."""
        return {name: "none" if value is None else value for name, value in self.model_dump().items()}


GATE_RULES_PARAMETER = "gate_rules"  # the kfp pipeline's parameter holding every rule, as one dict


class GateRulesError(UserError):
    """Gate rules that GateRules refuses (an unknown key, a bad value): one line naming the key."""


def rules_from_parameter(value: object) -> GateRules:
    """The rules of the kfp pipeline's `gate_rules` parameter (a dict; keys left out keep their defaults). An
    unknown key or a bad value raises GateRulesError, so the task fails with one line instead of gating with a
    rule nobody asked for."""
    if not isinstance(value, dict):
        raise GateRulesError(f"{GATE_RULES_PARAMETER}: expected a dict of gate rules, got {type(value).__name__}")
    try:
        return GateRules.model_validate(value)
    except ValidationError as error:
        known = ", ".join(GateRules.model_fields)
        raise GateRulesError(f"{GATE_RULES_PARAMETER}: {describe_validation_error(error)} (rules: {known})") from None


Action = Literal["promoted", "forced", "refused", "already_champion"]


class GateInput(BaseModel):
    """What the gate knows when it decides about `version` (all of it read from verified evidence or the alias)."""

    model_config = ConfigDict(extra="forbid")

    version: str
    champion: str | None = Field(description="The version the champion alias points at now.")
    metrics: dict[str, float] | None = Field(description="The challenger's attested metrics; None: evidence refused.")
    evidence_problem: str = ""
    scored_champion: str | None = Field(None, description="The champion its evaluation scored beside it.")
    scored_champion_weights: str | None = Field(None, description="The sha256 of the weights it scored as champion.")
    champion_weights: str | None = Field(None, description="The current champion's attested weights sha256.")
    champion_problem: str = Field("", description="Why its evaluation could not score the champion.")
    paired: PairedResult | None = None
    rolled_back: bool = False
    forced_by: str | None = Field(None, description="A person overriding the gate, saying who/why; None: not forced.")


class GateDecision(BaseModel):
    action: Action
    reasons: list[str]

    @property
    def promote(self) -> bool:
        return self.action in ("promoted", "forced", "already_champion")

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


def paired_problem(gate: GateInput, rules: GateRules) -> str:
    """Why the paired comparison with the current champion does not let the challenger pass ("" when it does)."""
    if gate.champion_problem:
        return f"the champion could not be scored beside it: {gate.champion_problem}"
    if gate.scored_champion != gate.champion:
        scored = f"champion v{gate.scored_champion}" if gate.scored_champion else "no champion"
        return f"evaluated against {scored} but the champion is v{gate.champion}: evaluate it again on the same bytes"
    if gate.scored_champion_weights != gate.champion_weights:  # version numbers restart if the model is re-created
        return f"evaluated against other weights than champion v{gate.champion}'s: evaluate it again on the same bytes"
    paired = gate.paired
    if paired is None or paired.champion_version != gate.champion:
        return "no paired comparison with the champion in its evidence"
    if paired.blocks < rules.min_blocks:  # a percentile bootstrap of a few blocks is far narrower than it should be
        return f"the paired comparison rests on {paired.blocks} blocks, the gate needs at least {rules.min_blocks}"
    if paired.confidence < rules.confidence:
        return f"its interval is at {paired.confidence:.0%}, the gate needs {rules.confidence:.0%}"
    bound = -rules.min_improvement
    if paired.high < bound:
        return ""
    verdict = "worse than the champion" if paired.low > 0 else "too close to call"
    return f"{verdict}: {paired.interval_text()}; promotion needs the upper bound below {bound:+.4f}"


def decide(gate: GateInput, rules: GateRules) -> GateDecision:
    """Promote, refuse, or note that `gate.version` is champion already (see the module docstring)."""
    if gate.champion == gate.version:
        return GateDecision(action="already_champion", reasons=["already champion"])
    if gate.metrics is None:
        reasons = [gate.evidence_problem or "no verified evidence"]
    else:
        reasons = absolute_problems(gate.metrics, rules)
        if gate.champion is not None:
            problem = paired_problem(gate, rules)
            reasons += [problem] if problem else []
        elif gate.scored_champion or gate.champion_problem:  # its evidence is a comparison: never a first champion
            scored = f"champion v{gate.scored_champion}" if gate.scored_champion else "a champion"
            reasons.append(f"evaluated against {scored} but there is no champion now: evaluate it again")
    if gate.rolled_back:
        reasons.insert(0, "rolled back earlier: only --force promotes it again")
    if gate.forced_by is not None:
        return GateDecision(action="forced", reasons=[f"forced: {gate.forced_by or 'by hand'}", *reasons])
    if reasons:
        return GateDecision(action="refused", reasons=reasons)
    if gate.champion is None:
        value = float(gate.metrics[rules.metric])
        return GateDecision(action="promoted", reasons=[f"first champion: {rules.metric} {value:.4f} passes checks"])
    return GateDecision(action="promoted", reasons=[f"beats champion v{gate.champion}: {gate.paired.interval_text()}"])
