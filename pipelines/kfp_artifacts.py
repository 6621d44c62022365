"""KFP's own artifacts for the pipeline's outputs: what a component writes to an `Output[...]` path (the
launcher uploads it under the pipeline root and records it in ML Metadata: the KFP UI shows it, with lineage) and
how a consumer checks an `Input[...]` before using it.

    prepared data           Output[Dataset]   the shard folder; metadata data_hash
    checkpoints, base       Output[Model]     one .pt file; metadata sha256 (the `sha256:<hex>` the steps pass on)
    evaluation              Output[Metrics]   every metric the gate can use, one `log_metric` each
    report                  Output[Markdown]  report.md

Every consumer verifies what it reads: a model file against the hash its producer reported (a task input, so
a mismatch cannot pass unnoticed), a dataset against its manifest and data hash (pipelines.run_spec.local_data).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from pipelines import artifacts


def save_dataset(prepared_dir: str | Path, dataset, data_hash: str) -> None:
    """Copy the prepared shard folder into a Dataset output."""
    target = Path(dataset.path)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(prepared_dir, target)
    dataset.metadata.update({"data_hash": data_hash})


def save_model(source_uri: str, model, expected_hash: str, **metadata: str) -> None:
    """Copy one checkpoint-like file (local path or s3://) into a Model output, checking its hash on the way."""
    target = Path(model.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    local = artifacts.fetch_file(source_uri, target)
    if local != target:
        shutil.copyfile(local, target)
    actual = artifacts.file_hash(target)
    if actual != expected_hash:
        raise artifacts.StorageError(f"{source_uri}: content hash {actual} differs from the reported {expected_hash}")
    model.metadata.update({"sha256": expected_hash, "source": source_uri, **metadata})


def verified_model_path(model, expected_hash: str) -> str:
    """The local path of a Model input once its content matches `expected_hash` (what the producer reported)."""
    path = Path(model.path)
    if not path.is_file():
        raise artifacts.StorageError(f"model artifact {model.uri}: no file at {path}")
    actual = artifacts.file_hash(path)
    if actual != expected_hash:
        raise artifacts.StorageError(f"model artifact {model.uri}: content hash {actual}, expected {expected_hash}")
    return str(path)


def log_metrics(metrics_artifact, metrics: dict[str, float]) -> None:
    """Every finite metric into a Metrics output (the KFP UI's metrics view reads the metadata), and the same as
    JSON in its file: a Metrics artifact otherwise has no file, and kfp.local's cache treats an output whose file
    is missing as a miss (kfp/local/cache.py `LocalCache.get`), so the evaluation would never be reused."""
    finite = {
        name: float(value)
        for name, value in sorted(metrics.items())
        if isinstance(value, int | float) and math.isfinite(value)
    }
    for name, value in finite.items():
        metrics_artifact.log_metric(name, value)
    target = Path(metrics_artifact.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(finite, indent=2, sort_keys=True))


def save_report(report_uri: str, report) -> None:
    """report.md next to `report_uri` (the report.json of the eval folder) into a Markdown output."""
    source = report_uri.rsplit("/", 1)[0] + "/report.md"
    target = Path(report.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    local = artifacts.fetch_file(source, target)
    if local != target:
        shutil.copyfile(local, target)
