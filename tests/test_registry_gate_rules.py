"""The gate's rule as a pure function of metrics (components/registry/gate_rules.py)."""

from __future__ import annotations

import math

from components.registry.gate_rules import GateRules, absolute_problems, decide

RULES = GateRules(min_improvement=0.05, max_bits_per_byte=6.0, min_live_code_share=0.2)


def metrics(bpb: float, share: float = 0.5, **extra: float) -> dict[str, float]:
    return {"test_bits_per_byte": bpb, "val_bits_per_byte": bpb + 0.1, "live_code_share_L0": share, **extra}


def test_first_version_is_promoted_when_the_absolute_checks_pass() -> None:
    decision = decide(metrics(3.0), None, RULES)
    assert decision.promote and "first champion" in decision.summary


def test_first_version_is_refused_above_the_ceiling_or_with_dead_codebooks() -> None:
    above = decide(metrics(6.5), None, RULES)
    assert not above.promote and "above the ceiling" in above.summary
    dead = decide(metrics(3.0, share=0.1), None, RULES)
    assert not dead.promote and "live_code_share_L0 0.100 below 0.200" in dead.summary


def test_challenger_must_beat_the_champion_by_the_margin() -> None:
    assert decide(metrics(2.90), metrics(3.0), RULES).promote
    close = decide(metrics(2.97), metrics(3.0), RULES)
    assert not close.promote and "does not beat the champion's 3.0000 by 0.05" in close.summary
    assert not decide(metrics(3.5), metrics(3.0), RULES).promote


def test_a_better_challenger_still_fails_the_absolute_checks() -> None:
    decision = decide(metrics(2.0, share=0.05), metrics(3.0), RULES)
    assert not decision.promote and "live_code_share_L0" in decision.summary


def test_every_problem_is_listed() -> None:
    decision = decide(
        {"test_bits_per_byte": 7.0, "live_code_share_L0": 0.0, "live_code_share_L1": 0.1}, metrics(3.0), RULES
    )
    assert len(decision.reasons) == 4  # ceiling, two levels, not better


def test_missing_or_nan_metric_is_refused() -> None:
    assert "missing" in decide({"live_code_share_L0": 0.5}, None, RULES).summary
    assert not decide(metrics(math.nan), None, RULES).promote
    assert not decide(metrics(2.0), {"val_bits_per_byte": 1.0}, RULES).promote


def test_optional_checks() -> None:
    loose = GateRules(max_bits_per_byte=None, min_live_code_share=0.0)
    assert absolute_problems({"test_bits_per_byte": 9.0}, loose) == []
    exact = GateRules(min_exact_match=0.9)
    assert absolute_problems(metrics(3.0, reconstruction_exact_match_bytes=0.95), exact) == []
    assert absolute_problems(metrics(3.0, reconstruction_exact_match_bytes=0.5), exact)
    other = GateRules(metric="val_bits_per_byte", min_improvement=0.0)
    assert decide(metrics(2.9), metrics(3.0), other).promote
