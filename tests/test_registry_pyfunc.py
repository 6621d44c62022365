"""The registered model as mlflow.pyfunc: logged from a checkpoint, loaded by alias, predicting bits per byte,
codes and generated text for strings (components/registry/pyfunc_model.py); self-contained (it loads and serves where
this repository cannot be imported) and never unpickled."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from components.registry import promote as registry
from components.registry.pyfunc_model import log_pyfunc_model
from components.training.stages import load_pipeline_config
from model import build_model
from tests.registry_helpers import invoke_served
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]
# Runs at interpreter start (PYTHONPATH) in every process of a "no repository" environment, also in the workers
# `mlflow models serve` spawns: it drops the editable install's finder and any path into a checkout, so
# `components`, `model` and `configs` can only come from the logged model's own code.
HIDE_REPOSITORY = """
import sys
roots = {roots!r}
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in (getattr(f, "__module__", "") or "")]
sys.path[:] = [p for p in sys.path if p and p.rstrip("/") not in roots]  # the venv may live inside a checkout
sys.path_importer_cache.clear()
"""


@pytest.fixture(scope="module")
def champion_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("pyfunc")
    config = load_pipeline_config("ci")
    checkpoint = root / "checkpoint.pt"
    torch.save(
        {
            "model_state": build_model(config).state_dict(),
            "exp_config": config.as_dict(),
            "optimizer_state": {"big": torch.zeros(10)},
            "data_hash": "d",
        },
        checkpoint,
    )
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    # an explicit artifact location: a sqlite store would otherwise put artifacts in ./mlruns of the cwd
    mlflow.MlflowClient(uri).create_experiment("pyfunc-test", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment("pyfunc-test")
    with mlflow.start_run():
        info = log_pyfunc_model(checkpoint)
    client = registry.client_for(uri)
    version = registry.register_version(client, "served", info.model_uri, {"data_hash": "d"})
    client.set_registered_model_alias("served", registry.CHAMPION, version)
    return mlflow.pyfunc.load_model("models:/served@champion"), info.model_uri, uri


@pytest.fixture
def without_repository(tmp_path: Path, champion_model) -> tuple[dict[str, str], Path]:
    """An environment (and a working folder) in which the repository cannot be imported."""
    site = tmp_path / "site"
    site.mkdir()
    roots = sorted({str(REPO), str(REPO.resolve()), os.path.realpath("/work/main")})
    (site / "sitecustomize.py").write_text(HIDE_REPOSITORY.format(roots=roots))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(
        PYTHONPATH=str(site),
        MLFLOW_TRACKING_URI=champion_model[2],
        PYTHONDONTWRITEBYTECODE="1",
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    )  # `mlflow models serve` execs uvicorn
    work = tmp_path / "elsewhere"
    work.mkdir()
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; print([n for n in ('components', 'model', 'configs') if u.find_spec(n)])",
        ],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr  # the environment really hides it
    return env, work


def test_bits_per_byte_for_each_string(champion_model) -> None:
    model = champion_model[0]
    rows = model.predict(["hello world", "ab"])
    assert [row["text"] for row in rows] == ["hello world", "ab"]
    assert all(math.isfinite(row["bits_per_byte"]) and row["bits_per_byte"] > 0 for row in rows)
    assert rows[0]["bytes"] == 11
    framed = model.predict(pd.DataFrame({"text": ["hello world"]}))[0]
    assert framed["bits_per_byte"] == pytest.approx(rows[0]["bits_per_byte"])


def test_codes_and_generation(champion_model) -> None:
    model = champion_model[0]
    (row,) = model.predict(["the quick brown fox"], params={"task": "codes"})
    assert len(row["codes"]) == 1 and row["codes"][0]
    assert all(0 <= code < 64 for code in row["codes"][0])
    (generated,) = model.predict(["Once "], params={"task": "generate", "max_new_bytes": 6})
    assert isinstance(generated["generated"], str) and len(generated["generated"].encode("utf-8", "replace")) <= 18


def test_unknown_task_fails_naming_the_choices(champion_model) -> None:
    model = champion_model[0]
    with pytest.raises(Exception, match="unknown task 'poem'.*bits_per_byte, codes, generate"):
        model.predict(["x"], params={"task": "poem"})


def test_the_logged_checkpoint_is_slim_and_loads_weights_only(champion_model, tmp_path: Path) -> None:  # noqa: ARG001
    local = mlflow.artifacts.download_artifacts("models:/served@champion", dst_path=str(tmp_path))
    (checkpoint,) = Path(local).rglob("model.pt")
    state = torch.load(checkpoint, weights_only=True)
    assert "model_state" in state and "exp_config" in state and "optimizer_state" not in state


def test_the_model_is_code_not_a_pickle(champion_model, tmp_path: Path) -> None:
    local = Path(mlflow.artifacts.download_artifacts("models:/served@champion", dst_path=str(tmp_path)))
    assert not list(local.rglob("*.pkl")), "a pickle would run code on load"
    mlmodel = (local / "MLmodel").read_text()
    assert "model_code_path" in mlmodel and "code: code" in mlmodel
    assert (local / "code" / "model" / "autoencoder.py").is_file() and (local / "code" / "configs").is_dir()
    assert not (local / "code" / "components").exists()
    requirements = (local / "requirements.txt").read_text()
    assert all(f"{name}==" in requirements for name in ("torch", "pydantic", "pyyaml", "numpy", "mlflow"))


def test_loads_by_alias_where_the_repository_cannot_be_imported(champion_model, without_repository) -> None:
    env, work = without_repository
    script = (
        "import json, mlflow; m = mlflow.pyfunc.load_model('models:/served@champion'); "
        "print(json.dumps(m.predict(['hello world'])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=work, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(result.stdout.strip().splitlines()[-1])
    expected = champion_model[0].predict(["hello world"])[0]["bits_per_byte"]
    assert row["bits_per_byte"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_models_serve_answers_bits_per_byte_over_http(champion_model, without_repository) -> None:
    env, work = without_repository
    port = free_port()
    log = work / "serve.log"
    with log.open("wb") as handle:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "models",
                "serve",
                "-m",
                "models:/served@champion",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=work,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        (row,) = invoke_served(server, port, log, ["hello world"])
        assert row["bits_per_byte"] == pytest.approx(
            champion_model[0].predict(["hello world"])[0]["bits_per_byte"], rel=1e-5
        )
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
                server.wait()
