"""The gate's rule as a pure function of what the signed evidence says (components/registry/gate_rules.py), and the
paired interval it reads (components/registry/paired_interval.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from components.registry.gate_rules import GateInput, GateRules, absolute_problems, decide
from components.registry.paired_interval import PairedResult, paired_from_bits, paired_interval

RULES = GateRules(min_improvement=0.05, max_bits_per_byte=6.0, min_live_code_share=0.2)


def metrics(bpb: float, share: float = 0.5, **extra: float) -> dict[str, float]:
    return {"test_bits_per_byte": bpb, "val_bits_per_byte": bpb + 0.1, "live_code_share_L0": share, **extra}


def paired(low: float, high: float, champion: str = "1", confidence: float = 0.95) -> PairedResult:
    middle = (low + high) / 2
    return PairedResult(
        champion_version=champion,
        challenger_bits_per_byte=3.0 + middle,
        champion_bits_per_byte=3.0,
        difference=middle,
        low=low,
        high=high,
        confidence=confidence,
        blocks=40,
        bytes=40000,
        seed=0,
        resamples=2000,
    )


def gate(values: dict | None, champion: str | None = "1", interval: PairedResult | None = None, **changes):
    fields = dict(version="2", champion=champion, metrics=values, scored_champion=champion, paired=interval)
    return GateInput(**{**fields, **changes})


def test_first_version_is_promoted_when_the_absolute_checks_pass() -> None:
    decision = decide(gate(metrics(3.0), champion=None), RULES)
    assert decision.promote and decision.action == "promoted" and "first champion" in decision.summary


def test_first_version_is_refused_above_the_ceiling_or_with_dead_codebooks() -> None:
    above = decide(gate(metrics(6.5), champion=None), RULES)
    assert not above.promote and "above the ceiling" in above.summary
    dead = decide(gate(metrics(3.0, share=0.1), champion=None), RULES)
    assert not dead.promote and "live_code_share_L0 0.100 below 0.200" in dead.summary


def test_the_whole_interval_must_lie_below_minus_the_margin() -> None:
    assert decide(gate(metrics(2.9), interval=paired(-0.12, -0.06)), RULES).action == "promoted"
    close = decide(gate(metrics(2.9), interval=paired(-0.12, -0.04)), RULES)
    assert close.action == "refused" and close.summary.startswith("too close to call")
    assert "interval [-0.1200, -0.0400]" in close.summary and "upper bound below -0.0500" in close.summary
    worse = decide(gate(metrics(3.5), interval=paired(0.01, 0.2)), RULES)
    assert worse.action == "refused" and "worse than the champion" in worse.summary


def test_a_lower_confidence_than_the_rules_need_is_refused() -> None:
    decision = decide(gate(metrics(2.9), interval=paired(-0.12, -0.06, confidence=0.8)), RULES)
    assert decision.action == "refused" and "at 80%, the gate needs 95%" in decision.summary


def test_a_champion_that_could_not_be_scored_or_another_champion_refuses() -> None:
    broken = decide(gate(metrics(2.0), champion_problem="champion v1: artifacts/model.pt missing"), RULES)
    assert broken.action == "refused" and "could not be scored beside it: champion v1" in broken.summary
    stale = decide(gate(metrics(2.0), champion="3", interval=paired(-1, -0.9), scored_champion="1"), RULES)
    assert stale.action == "refused" and "evaluated against champion v1 but the champion is v3" in stale.summary
    unscored = decide(gate(metrics(2.0), champion="3", scored_champion=None), RULES)
    assert "evaluated against no champion but the champion is v3" in unscored.summary
    assert "no paired comparison" in decide(gate(metrics(2.0)), RULES).summary


def test_a_better_challenger_still_fails_the_absolute_checks() -> None:
    decision = decide(gate(metrics(2.0, share=0.05), interval=paired(-1.1, -0.9)), RULES)
    assert not decision.promote and "live_code_share_L0" in decision.summary


def test_every_problem_is_listed() -> None:
    values = {"test_bits_per_byte": 7.0, "live_code_share_L0": 0.0, "live_code_share_L1": 0.1}
    decision = decide(gate(values, interval=paired(0.1, 0.3)), RULES)
    assert len(decision.reasons) == 4  # ceiling, two levels, not better


def test_missing_or_nan_metric_is_refused() -> None:
    assert "missing" in decide(gate({"live_code_share_L0": 0.5}, champion=None), RULES).summary
    assert not decide(gate(metrics(math.nan), champion=None), RULES).promote


def test_evidence_refused_rolled_back_forced_and_already_champion_are_decided_here() -> None:
    refused = decide(gate(None, evidence_problem="v2: evaluation attestation refused: bad signature"), RULES)
    assert refused.action == "refused" and refused.reasons == ["v2: evaluation attestation refused: bad signature"]
    good = paired(-0.5, -0.4)
    rolled = decide(gate(metrics(2.5), interval=good, rolled_back=True), RULES)
    assert rolled.action == "refused" and rolled.reasons[0].startswith("rolled back earlier")
    forced = decide(gate(None, evidence_problem="no evidence", forced_by="incident 42"), RULES)
    assert forced.action == "forced" and forced.reasons == ["forced: incident 42", "no evidence"]
    assert decide(gate(metrics(9.0), champion="2"), RULES).action == "already_champion"


def test_optional_checks() -> None:
    loose = GateRules(max_bits_per_byte=None, min_live_code_share=0.0)
    assert absolute_problems({"test_bits_per_byte": 9.0}, loose) == []
    exact = GateRules(min_exact_match=0.9)
    assert absolute_problems(metrics(3.0, reconstruction_exact_match_bytes=0.95), exact) == []
    assert absolute_problems(metrics(3.0, reconstruction_exact_match_bytes=0.5), exact)


# -- the paired interval -------------------------------------------------------------------------------------------
def _blocks(count: int = 60, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(200, 1200, count)
    return sizes, sizes * rng.uniform(2.0, 4.0, count)  # bits of a champion: 2-4 bits per byte by block


def test_two_identical_models_are_too_close_to_call() -> None:
    sizes, bits = _blocks()
    result = paired_interval(bits, bits, sizes, "1")
    assert result.difference == 0 and result.low == 0 and result.high == 0
    decision = decide(gate(metrics(3.0), interval=result), GateRules(min_improvement=0.01))
    assert decision.action == "refused" and decision.summary.startswith("too close to call")
    assert "[+0.0000, +0.0000]" in decision.summary


def test_known_extra_bits_per_block_give_the_interval_they_should() -> None:
    sizes, champion = _blocks()
    noise = np.random.default_rng(2).normal(0, 0.05, len(sizes)) * sizes
    better = paired_interval(champion - 0.2 * sizes + noise, champion, sizes, "1")  # 0.2 bits per byte fewer
    assert better.low < -0.2 < better.high and better.high < -0.15
    assert decide(gate(metrics(2.8), interval=better), GateRules(min_improvement=0.1)).action == "promoted"
    assert decide(gate(metrics(2.8), interval=better), GateRules(min_improvement=0.2)).action == "refused"
    slightly = paired_interval(champion - 0.01 * sizes + noise, champion, sizes, "1")  # inside the noise
    assert slightly.low < -0.01 < slightly.high
    assert decide(gate(metrics(2.99), interval=slightly), GateRules(min_improvement=0.0)).action == "refused"


def test_the_bootstrap_is_seeded_and_reproducible() -> None:
    sizes, champion = _blocks()
    challenger = champion + np.random.default_rng(3).normal(0, 0.1, len(sizes)) * sizes
    first = paired_interval(challenger, champion, sizes, "1", seed=7)
    assert paired_interval(challenger, champion, sizes, "1", seed=7) == first
    assert (paired_interval(challenger, champion, sizes, "1", seed=8).low, first.low)[0] != first.low
    assert first.confidence == 0.95 and first.blocks == len(sizes) and first.bytes == int(sizes.sum())


def test_one_block_decides_nothing() -> None:
    result = paired_interval([900.0], [1000.0], [500], "1")
    assert result.low == -math.inf and result.high == math.inf
    assert decide(gate(metrics(2.0), interval=result), RULES).action == "refused"


def test_every_rule_is_a_flag_of_registry_promote() -> None:
    """The flags are generated from GateRules, so no rule is unreachable (min_exact_match was)."""
    import argparse

    from abstractinator.flags import add_gate_arguments, gate_flag, gate_rules_from

    parser = argparse.ArgumentParser()
    add_gate_arguments(parser)
    flags = {action.option_strings[0] for action in parser._actions if action.option_strings[0] != "-h"}
    assert flags == {gate_flag(name) for name in GateRules.model_fields}
    assert gate_rules_from(parser.parse_args([])) == GateRules()
    given = parser.parse_args(["--min-exact-match", "0.9", "--confidence", "0.99", "--max-bits-per-byte", "0"])
    assert gate_rules_from(given) == GateRules(min_exact_match=0.9, confidence=0.99, max_bits_per_byte=None)


def test_a_comparison_on_too_few_blocks_is_refused_with_the_count() -> None:
    two = paired_interval([80, 90], [100, 100], [100, 100], "1")  # the percentile interval of 2 values: [min, max]
    assert two.high < -RULES.min_improvement
    decision = decide(gate(metrics(2.9), interval=two), RULES)
    assert decision.action == "refused"
    assert "rests on 2 blocks, the gate needs at least 10" in decision.summary


def test_the_interval_is_recomputed_at_the_gate_confidence_from_the_block_bits() -> None:
    sizes, champion = _blocks()
    challenger = champion - 0.05 * sizes + np.random.default_rng(3).normal(0, 20, len(sizes))
    rows = {"test": {"bytes_bits": [[int(n), float(b)] for n, b in zip(sizes, challenger, strict=True)]}}
    rows["test"]["champion"] = [[int(n), float(b)] for n, b in zip(sizes, champion, strict=True)]
    at_95 = paired_interval(challenger, champion, sizes, "1")
    at_99 = paired_from_bits({"blocks": rows}, "1", 0.99, seed=0, resamples=2000)
    assert at_99.confidence == 0.99 and at_99.low < at_95.low and at_99.high > at_95.high
    assert at_99.difference == at_95.difference


def test_evidence_of_a_comparison_never_makes_a_first_champion() -> None:
    lost = gate(metrics(2.9), champion=None, scored_champion="1", interval=paired(0.1, 0.2))  # alias deleted
    decision = decide(lost, RULES)
    assert decision.action == "refused" and "evaluated against champion v1 but there is no champion now" in (
        decision.summary
    )
    unscored = decide(gate(metrics(2.9), champion=None, champion_problem="champion v1: no weights"), RULES)
    assert unscored.action == "refused" and "there is no champion now" in unscored.summary


def test_the_scored_champion_weights_must_be_the_champions_now() -> None:
    good = paired(-0.12, -0.06)
    same = gate(metrics(2.9), interval=good, scored_champion_weights="a" * 64, champion_weights="a" * 64)
    assert decide(same, RULES).action == "promoted"
    recreated = gate(metrics(2.9), interval=good, scored_champion_weights="a" * 64, champion_weights="b" * 64)
    decision = decide(recreated, RULES)
    assert decision.action == "refused" and "other weights than champion v1's" in decision.summary


def test_the_pipeline_takes_every_rule_as_one_dict_that_round_trips() -> None:
    """`pipeline run-local` offers every rule (min_exact_match was unreachable) and hands them on as one dict;
    a rule that is off travels as "none" (kfp parameters cannot hold null) and comes back off."""
    import argparse

    from abstractinator.flags import add_run_arguments, pipeline_arguments
    from components.registry.gate_rules import GATE_RULES_PARAMETER, rules_from_parameter

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    args = parser.parse_args(["--min-exact-match", "0.5", "--max-bits-per-byte", "none", "--min-blocks", "12"])
    parameter = pipeline_arguments(args)[GATE_RULES_PARAMETER]
    assert set(parameter) == set(GateRules.model_fields)
    expected = GateRules(min_exact_match=0.5, max_bits_per_byte=None, min_blocks=12)
    assert rules_from_parameter(parameter) == expected
    assert rules_from_parameter({**parameter, "min_blocks": 12.0}) == expected  # kfp's Struct turns ints to floats
    assert rules_from_parameter({}) == GateRules()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"min_improvment": 0.1}, "gate_rules: min_improvment: unknown key"),
        ({"min_blocks": 1}, "gate_rules: min_blocks: Input should be greater than or equal to 2"),
        ({"max_bits_per_byte": "high"}, "gate_rules: max_bits_per_byte:"),
        (["min_improvement"], "gate_rules: expected a dict of gate rules, got list"),
        # rules that would quietly weaken the gate (attacking review): each refused like a typo
        ({"min_improvement": "inf"}, "gate_rules: min_improvement: Input should be a finite number"),
        ({"max_bits_per_byte": 1e300}, "gate_rules: max_bits_per_byte: Input should be less than or equal to 64"),
        ({"confidence": 1e-12}, "gate_rules: confidence: Input should be greater than or equal to 0.8"),
        ({"metric": "live_code_share_L0"}, "gate_rules: metric: must be a <text>_bits_per_byte"),
    ],
)
def test_the_promote_task_fails_in_one_line_on_a_bad_rule(value, message, capsys) -> None:
    """The kfp promote task validates the dict before any work: a bad rule ends it with exit 2 and one line."""
    import inspect

    from pipelines.kfp_tasks import promote

    inputs = {name: None for name in inspect.signature(promote).parameters}  # none is reached when a rule is bad
    inputs.update(config="ci", overrides=[], artifact_root="artifacts", run_key="", code_identity="", gate_rules=value)
    with pytest.raises(SystemExit) as stopped:
        promote(**inputs)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
