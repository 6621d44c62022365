"""The registered model as mlflow.pyfunc: logged from a checkpoint, loaded by alias, predicting bits per byte,
codes and generated text for strings (components/pyfunc_model.py)."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from components import promote as registry
from components.pyfunc_model import log_pyfunc_model
from components.stages import load_pipeline_config
from model import build_model


@pytest.fixture(scope="module")
def champion_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("pyfunc")
    config = load_pipeline_config("ci")
    checkpoint = root / "checkpoint.pt"
    torch.save({"model_state": build_model(config).state_dict(), "exp_config": config.as_dict(),
                "optimizer_state": {"big": torch.zeros(10)}, "data_hash": "d"}, checkpoint)
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
    return mlflow.pyfunc.load_model("models:/served@champion"), info.model_uri


def test_bits_per_byte_for_each_string(champion_model) -> None:
    model, _ = champion_model
    rows = model.predict(["hello world", "ab"])
    assert [row["text"] for row in rows] == ["hello world", "ab"]
    assert all(math.isfinite(row["bits_per_byte"]) and row["bits_per_byte"] > 0 for row in rows)
    assert rows[0]["bytes"] == 11
    framed = model.predict(pd.DataFrame({"text": ["hello world"]}))[0]
    assert framed["bits_per_byte"] == pytest.approx(rows[0]["bits_per_byte"])


def test_codes_and_generation(champion_model) -> None:
    model, _ = champion_model
    (row,) = model.predict(["the quick brown fox"], params={"task": "codes"})
    assert len(row["codes"]) == 1 and row["codes"][0]
    assert all(0 <= code < 64 for code in row["codes"][0])
    (generated,) = model.predict(["Once "], params={"task": "generate", "max_new_bytes": 6})
    assert isinstance(generated["generated"], str) and len(generated["generated"].encode("utf-8", "replace")) <= 18


def test_unknown_task_fails_naming_the_choices(champion_model) -> None:
    model, _ = champion_model
    with pytest.raises(Exception, match="unknown task 'poem'.*bits_per_byte, codes, generate"):
        model.predict(["x"], params={"task": "poem"})


def test_the_logged_checkpoint_is_slim_and_loads_weights_only(champion_model, tmp_path: Path) -> None:  # noqa: ARG001
    local = mlflow.artifacts.download_artifacts("models:/served@champion", dst_path=str(tmp_path))
    (checkpoint,) = Path(local).rglob("model.pt")
    state = torch.load(checkpoint, weights_only=True)
    assert "model_state" in state and "exp_config" in state and "optimizer_state" not in state
