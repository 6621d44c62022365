"""Load a trained model for evaluation from wherever a checkpoint lives.

Accepted locations:
    path/to/checkpoint_step300.pt      a checkpoint file (components/training/checkpoints.py)
    path/to/checkpoints/               a checkpoint folder: its `latest`
    s3://bucket/prefix[/file.pt]       the same in S3
    models:/<name>@<alias>             an MLflow registry version (also models:/<name>/<version>): its tag
                                       `checkpoint_uri` (any location above), else the checkpoint among the
                                       version's artifacts (a training checkpoint, or the slim model_state +
                                       exp_config file of components/registry/pyfunc_model.py)

The config comes from the checkpoint (its `exp_config`, plain data) unless one is passed. The model is built,
loaded strictly, put in eval mode and moved to the device.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.infrastructure.logs import get_logger
from components.infrastructure.storage import is_s3
from components.training.checkpoints import CheckpointError, load_checkpoint, read_checkpoint_file
from configs import ExpConfig, validate_config
from configs.runtime import choose_device
from model import build_model, require_memory_for

CHECKPOINT_URI_TAG = "checkpoint_uri"
log = get_logger(__name__)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: ExpConfig
    checkpoint: dict[str, Any]  # everything but the model/optimizer states (step, data_hash, mlflow_run_id, ...)
    location: str
    device: torch.device


def _cpu_instead_of_cuda(requested: str) -> None:
    # lm-eval's CLI asks for cuda:0 by default; on a machine without CUDA the CPU is the only choice.
    log.warning("cuda_unavailable", requested=requested, using="cpu")


def _registry_checkpoint(uri: str) -> dict[str, Any]:
    """The checkpoint behind models:/name@alias or models:/name/version."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from components.infrastructure.model_reference import parse_model_reference
    from components.infrastructure.redaction import one_line
    from components.infrastructure.tracking import mlflow_failures, resolve_tracking_uri

    try:
        name, alias, number = parse_model_reference(uri)
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    tracking_uri = resolve_tracking_uri(None)
    client = MlflowClient(tracking_uri)
    try:
        if alias:
            version = client.get_model_version_by_alias(name, alias)
        else:
            version = client.get_model_version(name, number)
    except mlflow_failures() as error:  # not there, or a failing or unreachable server: one line
        raise CheckpointError(f"{uri}: not found in the MLflow registry ({one_line(error)})") from None
    tagged = (version.tags or {}).get(CHECKPOINT_URI_TAG)
    if tagged:
        checkpoint = load_checkpoint(tagged)
    else:
        with tempfile.TemporaryDirectory(prefix="abstractinator-model-") as tmp:
            local = Path(
                download_artifacts(
                    artifact_uri=f"models:/{name}/{version.version}", dst_path=tmp, tracking_uri=tracking_uri
                )
            )
            files = sorted(local.rglob("*"), key=lambda p: p.suffix != ".pt") if local.is_dir() else [local]
            checkpoint = next((c for c in map(_model_file, files) if c is not None), None)
        if checkpoint is None:
            raise CheckpointError(f"{uri}: the version has no `{CHECKPOINT_URI_TAG}` tag and no checkpoint artifact")
    # Evaluating a registered version reports into the run that produced it.
    checkpoint.setdefault("mlflow_run_id", version.run_id)
    return checkpoint


def _model_file(path: Path) -> dict[str, Any] | None:
    """A training checkpoint, or the slim one a pyfunc model carries (model_state + exp_config, no marker)."""
    if not path.is_file():
        return None
    try:
        return read_checkpoint_file(path)
    except CheckpointError:
        pass
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file: the MLmodel, requirements, ...
        return None
    return data if isinstance(data, dict) and {"model_state", "exp_config"} <= set(data) else None


def read_any_checkpoint(location: str | Path) -> dict[str, Any]:
    location = str(location)
    if location.startswith("models:/"):
        return _registry_checkpoint(location)
    if not is_s3(location) and not Path(location).exists():
        raise CheckpointError(f"{location}: no such checkpoint file or folder")
    return load_checkpoint(location)


def load_model(location: str | Path, device: str | None = "auto", config: ExpConfig | None = None) -> LoadedModel:
    checkpoint = read_any_checkpoint(location)
    if config is None:
        if "exp_config" not in checkpoint:
            raise CheckpointError(f"{location}: holds no exp_config; pass a config")
        config = validate_config(checkpoint["exp_config"], origin=f"{location} (exp_config)")
    target = choose_device(device, on_missing_cuda=_cpu_instead_of_cuda)
    require_memory_for(config, f"{location} (exp_config)")
    model = build_model(config)
    try:
        model.load_state_dict(checkpoint["model_state"])
    except (KeyError, RuntimeError) as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(f"{location}: does not fit the config's model ({first})") from None
    model.to(target).eval()
    meta = {
        k: v
        for k, v in checkpoint.items()
        if k not in ("model_state", "optimizer_state", "scheduler_state", "rng_state", "data_state")
    }
    return LoadedModel(model=model, config=config, checkpoint=meta, location=str(location), device=target)
