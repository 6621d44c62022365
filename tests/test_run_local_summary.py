"""`pipeline run-local`'s summary shows what THIS run's evaluation measured: a run that re-evaluates a model
already registered (`--no-skip-unchanged` with nothing changed, as a second `make demo` would) registers nothing
new, so the registry's newest version still carries its first evaluation ("no champion to compare")."""

from __future__ import annotations

import json
from pathlib import Path

from components.registry.attestation import ATTESTATION_FILE, Attestation, ScoredChampion, write_signed
from components.registry.paired_interval import PairedResult
from pipelines.local_run import _evaluation_of
from pipelines.registry_view import this_run_table
from tests.registry_helpers import evaluation_key  # noqa: F401

PAIRED = PairedResult(
    champion_version="1",
    challenger_bits_per_byte=2.0,
    champion_bits_per_byte=2.25,
    difference=-0.25,
    low=-0.3,
    high=-0.2,
    confidence=0.95,
    blocks=40,
    bytes=9000,
    seed=0,
    resamples=2000,
)


def signed_evaluation(folder: Path) -> dict:
    attestation = Attestation(
        model_name="m",
        challenger_weights_sha256="ab" * 32,
        champion=ScoredChampion(version="1", weights_sha256="cd" * 32),
        data_hash="d",
        golden_sha256="",
        code_identity="c",
        config_hash="h",
        metrics={"test_bits_per_byte": 2.0},
        paired=PAIRED,
        paired_bits_sha256="e",
        report_sha256="f" * 64,
        evaluated_at="2026-12-06T00:00:00Z",
    )
    folder.mkdir(parents=True)
    write_signed(attestation, folder)
    return {"report_uri": str(folder / "report.json"), "report_hash": "sha256:" + "f" * 64, "metrics": {}}


def test_the_summary_shows_this_runs_champion_versus_challenger_numbers(tmp_path):
    table = this_run_table(signed_evaluation(tmp_path / "eval"))
    assert "champion versus challenger on the same bytes (test split: 40 blocks, 9000 bytes)" in table
    assert "champion v1" in table and "2.2500" in table and "2.0000" in table
    assert "[-0.3000, -0.2000]" in table


def test_an_attestation_that_does_not_verify_is_not_shown_as_a_result(tmp_path):
    evaluation = signed_evaluation(tmp_path / "eval")
    attestation = tmp_path / "eval" / ATTESTATION_FILE
    attestation.write_bytes(attestation.read_bytes().replace(b"2.25", b"9.25"))
    table = this_run_table(evaluation)
    assert "no verified attestation beside it" in table and "9.25" not in table


def test_an_attestation_of_another_report_is_not_shown_as_this_runs(tmp_path):
    evaluation = signed_evaluation(tmp_path / "eval")  # a genuine attestation, but not of this run's report
    table = this_run_table({**evaluation, "report_hash": "sha256:" + "0" * 64})
    assert "for another report: not shown" in table and "2.2500" not in table


def test_a_malformed_evaluation_output_is_one_line(tmp_path):
    assert this_run_table({"metrics": {}}).startswith("this run's evaluation cannot be shown: ")


def test_the_evaluation_is_read_from_this_runs_kfp_local_folder_only(tmp_path):
    run = tmp_path / "abstractinator-training-2026-12-06-19-37-45-766014"
    (run / "evaluate").mkdir(parents=True)
    evaluation = {"report_uri": "r", "report_hash": "h", "metrics": {}}
    output = {"parameterValues": {"result": evaluation}}  # the task's one dict output
    (run / "evaluate" / "executor_output.json").write_text(json.dumps(output))
    assert _evaluation_of({run}) == evaluation
    skipped = tmp_path / "abstractinator-training-2026-12-06-19-40-00-000000"  # stopped after data preparation
    (skipped / "prepare-data").mkdir(parents=True)
    assert _evaluation_of({skipped}) is None
    assert _evaluation_of({run, skipped}) is None  # two new runs in one folder: not ours to guess
