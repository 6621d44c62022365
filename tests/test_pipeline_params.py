"""params.yaml of the dvc stages is validated by the pipeline's own schemas, and dvc.yaml calls the same CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from abstractinator.cli import main
from configs import ConfigError
from pipelines.dvc_params import load_dvc_params
from pipelines.step_table import DVC_STEP_NAMES, STEP_NAMES, STEPS, kfp_task_name, result_file

REPO = Path(__file__).resolve().parents[1]


def test_the_repository_params_validate() -> None:
    params = load_dvc_params(REPO / "params.yaml")
    assert params.run.config == "configs/ci_config.py" and params.run.run_key == "dvc"
    assert params.gate.metric == "test_bits_per_byte"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("run", "config", "ci", "run.config: give the config file's path, e.g. configs/ci_config.py"),
        ("run", "run_key", None, "run.run_key: must be set"),
        ("run", "stage2_steps", None, "run.stage2_steps: must be a step count"),
        ("data", "source", "/elsewhere/texts", "data.source: a local source must lie under data/local/"),
    ],
)
def test_params_dvc_cannot_watch_are_refused(tmp_path: Path, section: str, key: str, value, message: str) -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_dvc_params(path)


def test_a_wrong_key_or_value_fails_naming_the_field(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["run"]["stage1_step"] = 5
    data["gate"]["min_improvement"] = -1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:
        load_dvc_params(path)
    assert "run.stage1_step: unknown key" in str(error.value)
    assert "gate.min_improvement" in str(error.value)


def test_dvc_stages_are_the_steps_before_the_gate_through_the_cli() -> None:
    """dvc.yaml's stage names stay literal there; they, their commands and their result files are the table's."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(DVC_STEP_NAMES)
    commands = [stage["cmd"] for stage in stages.values()]
    assert commands == [f"python -m abstractinator pipeline step {name}" for name in DVC_STEP_NAMES]
    for name, stage in stages.items():
        outs = [next(iter(out)) if isinstance(out, dict) else out for out in stage["outs"]]
        assert f"results/{result_file(name)}" in outs, name
    assert any("metrics" in stage for stage in stages.values())
    assert sum("plots" in stage for stage in stages.values()) == 2
    declared = {dep for stage in stages.values() for dep in stage["deps"]}
    assert all((REPO / dep).exists() for dep in declared if "${" not in dep and not dep.startswith("results/"))


def test_a_step_without_its_inputs_fails_in_one_line(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "pipeline",
            "step",
            "stage2_top_lm",
            "--params",
            str(REPO / "params.yaml"),
            "--results",
            str(tmp_path / "results"),
        ]
    )
    assert code == 2
    assert "prepare_data.json: missing; run the prepare_data step first" in capsys.readouterr().err


EARLIER_RESULTS = {  # what prepare_data and the two training steps leave in results/
    "prepare_data": {"data_uri": "data/prepared", "data_hash": "d"},
    "stage1_pretrain": {"stage": "stage1", "checkpoint_uri": "c1.pt", "checkpoint_hash": "h1"},
    "stage2_top_lm": {"stage": "stage2", "checkpoint_uri": "c2.pt", "checkpoint_hash": "h2", "mlflow_run_id": "r"},
}
EVALUATION = {"report_uri": "r.json", "report_hash": "h", "metrics": {}}


@pytest.mark.parametrize(
    ("step", "result", "message"),
    [
        ("evaluate", {"report_uri": "r.json", "metrics": {}}, "evaluate.json: report_hash: Field required"),
        ("evaluate", {**EVALUATION, "eval_run": "x"}, "evaluate.json: eval_run: unknown key"),
        ("evaluate", {**EVALUATION, "metrics": {"bpb": "low"}}, "evaluate.json: metrics.bpb:"),
        ("stage2_top_lm", {"stage": "stage2", "checkpoint_uri": "c"}, "stage2_top_lm.json: checkpoint_hash: Field"),
        ("stage1_pretrain", {**EARLIER_RESULTS["stage1_pretrain"], "stage": "stage3"}, "stage1_pretrain.json: stage:"),
        ("prepare_data", {"data_uri": "d", "data_hash": "h", "unchanged": True}, "unchanged: unknown key"),
    ],
)
def test_promote_reads_each_earlier_result_as_one_validated_value(tmp_path: Path, capsys, step, result, message):
    """The promote step takes each earlier step's result as one typed value (pipelines/step_results.py): one
    missing a field, with one nobody declared or a bad value fails in one line naming the file and the field,
    before MLflow is asked."""
    import json

    results = tmp_path / "results"
    results.mkdir()
    for name, earlier in {**EARLIER_RESULTS, "evaluate": EVALUATION, step: result}.items():
        (results / result_file(name)).write_text(json.dumps(earlier))
    code = main(["pipeline", "step", "promote", "--params", str(REPO / "params.yaml"), "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_every_place_that_names_a_step_takes_the_tables_one_name(tmp_path: Path) -> None:
    """pipelines/step_table.py is the one list: the CLI's choices, its step functions, the kfp component functions
    and the compiled pipeline's tasks are all derived from it (adding a row without a function fails here)."""
    import argparse

    from abstractinator.commands.pipeline import step
    from pipelines import kfp_tasks
    from pipelines.training import compile_pipeline

    parser = argparse.ArgumentParser()
    step.register(parser.add_subparsers())
    (choices,) = [a.choices for a in parser._subparsers._group_actions[0].choices["step"]._actions if a.dest == "name"]
    assert tuple(choices) == STEP_NAMES
    assert tuple(step.STEP_FUNCTIONS) == STEP_NAMES
    assert all(step.STEP_FUNCTIONS[name].__name__ == name for name in STEP_NAMES)
    assert tuple(vars(kfp_tasks.make_tasks("img"))) == STEP_NAMES
    compile_pipeline(str(tmp_path / "p.yaml"))
    compiled = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    assert set(compiled["components"]) - {c for c in compiled["components"] if c.startswith("comp-condition")} == {
        f"comp-{kfp_task_name(name)}" for name in STEP_NAMES
    }
    assert [s.training_stage for s in STEPS if s.training_stage] == ["stage1", "stage2"]
