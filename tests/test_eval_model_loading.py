"""Loading a model for evaluation: checkpoint file or folder, and an MLflow registry alias (models:/name@alias)."""

from __future__ import annotations

import pytest
import torch

from components.evaluation.model_loading import load_model
from components.training.checkpoints import CheckpointError, CheckpointStore
from model import build_model
from tests.model_helpers import tiny_config

TOKENS = torch.tensor([[256, *b"a registered model"]])


@pytest.fixture
def saved(tmp_path):
    config = tiny_config()
    model = build_model(config.updated(seed=3)).eval()
    store = CheckpointStore(tmp_path / "ckpt")
    uri = store.save({"model_state": model.state_dict(), "exp_config": config.as_dict(), "global_step": 7}, 7)
    return model, uri, tmp_path / "ckpt"


def test_file_and_folder_give_the_trained_weights_with_the_stored_config(saved):
    model, file_uri, folder = saved
    expected = model.code_length_bits(TOKENS)
    for location in (file_uri, folder):
        loaded = load_model(location, "cpu")
        assert loaded.checkpoint["global_step"] == 7 and "model_state" not in loaded.checkpoint
        assert torch.allclose(loaded.model.code_length_bits(TOKENS), expected)


def test_registry_alias_resolves_to_the_versions_checkpoint(saved, tmp_path, settings_env):

    from mlflow import MlflowClient

    model, file_uri, _ = saved
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings_env(MLFLOW_TRACKING_URI=tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("registry-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    # A slim checkpoint (model_state + exp_config, no format marker), as components/registry/pyfunc_model.py logs it.
    slim = tmp_path / "model.pt"
    full = torch.load(file_uri, weights_only=True)
    torch.save({"model_state": full["model_state"], "exp_config": full["exp_config"]}, slim)
    client.log_artifact(run.info.run_id, str(slim), "model/artifacts")
    client.create_registered_model("abstractinator-test")
    source = f"{run.info.artifact_uri}/model"
    version = client.create_model_version("abstractinator-test", source=source, run_id=run.info.run_id)
    client.set_registered_model_alias("abstractinator-test", "champion", version.version)

    loaded = load_model("models:/abstractinator-test@champion", "cpu")
    assert torch.allclose(loaded.model.code_length_bits(TOKENS), model.code_length_bits(TOKENS))
    assert loaded.checkpoint["mlflow_run_id"] == run.info.run_id  # evaluation reports into the producing run
    with pytest.raises(CheckpointError, match="abstractinator-test@nobody"):
        load_model("models:/abstractinator-test@nobody", "cpu")
