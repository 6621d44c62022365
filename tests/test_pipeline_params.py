"""params.yaml of the dvc stages is validated by the pipeline's own schemas, and dvc.yaml calls the same CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from abstractinator.cli import main
from configs import ConfigError
from pipelines.commands.step import STEPS
from pipelines.dvc_params import load_dvc_params

REPO = Path(__file__).resolve().parents[1]


def test_the_repository_params_validate() -> None:
    params = load_dvc_params(REPO / "params.yaml")
    assert params.run.config == "ci" and params.run.run_key == "dvc"
    assert params.gate.metric == "test_bits_per_byte"


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


def test_dvc_stages_are_the_five_steps_through_the_cli() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = [stage["cmd"] for stage in stages.values()]
    assert commands == [f"python -m abstractinator pipeline step {name}" for name in STEPS]
    assert any("metrics" in stage for stage in stages.values())
    assert sum("plots" in stage for stage in stages.values()) == 2


def test_a_step_without_its_inputs_fails_in_one_line(tmp_path: Path, capsys) -> None:
    code = main(["pipeline", "step", "stage2", "--params", str(REPO / "params.yaml"),
                 "--results", str(tmp_path / "results")])
    assert code == 2
    assert "prepare.json: missing; run the prepare step first" in capsys.readouterr().err
