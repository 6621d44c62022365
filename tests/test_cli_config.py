"""`abstractinator config show`: prints the resolved config; bad configs exit 2 with one line, no traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from abstractinator.cli import main
from configs import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["config.py", "tiny_config.py", "stage1_super_tiny_config.py", "ci_config.py"])
def test_show_prints_the_resolved_config_as_yaml_and_json(name: str, capsys: pytest.CaptureFixture) -> None:
    path = str(REPO / "configs" / name)
    assert main(["config", "show", path]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == load_config(path).as_dict()
    assert main(["config", "show", path, "--json", "--set", "max_steps=7"]) == 0
    assert json.loads(capsys.readouterr().out)["optim"]["max_steps"] == 7


def test_show_of_a_broken_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad_config.py"
    bad.write_text(
        "from configs.ci_config import exp_config as base\n"
        "exp_config = base.as_dict()\n"
        "exp_config['model']['compressor_level_configs'][0]['codebook_size'] = 'big'\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "abstractinator", "config", "show", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "compressor_level_configs.0.codebook_size" in lines[0]
    assert "Traceback" not in result.stderr
