"""The evaluation step: one function behind `abstractinator evaluate`, `python evaluate.py`, dvc and kfp.

Contract (the pipeline's evaluate step signs EvaluateResult's metrics and block bits into the attestation the
promotion gate reads: components/registry/attestation.py):

    evaluate(EvaluateParams(checkpoint=..., out_dir=...)) -> EvaluateResult

EvaluateParams (extra="forbid")
    checkpoint        checkpoint file, checkpoint folder (its latest), s3:// URI or models:/name@alias
    out_dir           where report.json, report.md and the PNG plots go
    data_dir          prepared shards (val/test splits); None: the config's data, prepared on first use
    compression       score the splits and the Canterbury texts (True)
    splits            which prepared splits to score (val, test)
    canterbury        include the four Canterbury texts (taken from <data_dir>/eval/canterbury, else fetched)
    tasks             lm-eval tasks (standard names become <task>_local when the hub is offline)
    limit, num_fewshot  passed to lm-eval
    max_eval_bytes    cap on the tokens read per split and the bytes read per text (speed); None: every token of
                      a split, the first TEXT_FILE_DEFAULT_MAX_BYTES (1 MB) of a text
    text_files        more files to score, each named by its file name
    device            "auto" | "cpu" | "cuda"
    batch_size        windows scored per forward pass
    reconstruction_windows  windows per text decoded greedily from their codes (exact-match metrics)
    quality_benchmark a bench/quality.py JSON whose plain-model numbers the report's plot shows as bars
    tracking          log metrics (as eval/<key>) and the report to MLflow: into the checkpoint's
                      `mlflow_run_id` run when it has one, else a new run in the config's project
EvaluateResult
    out_dir, report_json, report_md, plots, metrics (flat dict[str, float]), data_hash, mlflow_run_id,
    block_bits ({text: [[bytes, bits] per window]}: what a paired comparison of two models pairs up)

Metric keys (components/evaluation/eval_report.py `flat_metrics`): val_bits_per_byte, test_bits_per_byte (the gate's),
<canterbury text>_bits_per_byte, <text file>_bits_per_byte, <name>_<gzip|bzip2|xz|zstd>_bits_per_byte,
live_code_share_L{i}, bytes_per_code_L{i}, codebook_perplexity_L{i}, reconstruction_exact_match_bytes and
reconstruction_exact_match_windows (on the test split), and lm-eval results as <task>_<metric>.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from components.evaluation.evaluation_errors import EvaluationError, require_bits
from components.infrastructure.logs import get_logger

log = get_logger(__name__)

# Bytes of each text file scored when no --max-eval-bytes is given: scoring runs at kilobytes per second on a CPU,
# so an unbounded 10 MB file would take hours; the four Canterbury texts (at most 471 KB) fit whole.
TEXT_FILE_DEFAULT_MAX_BYTES = 1 << 20


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: str
    out_dir: Path
    data_dir: Path | None = None
    compression: bool = True
    splits: list[Literal["val", "test"]] = Field(default_factory=lambda: ["val", "test"])
    canterbury: bool = True
    tasks: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1)
    num_fewshot: int | None = Field(None, ge=0)
    max_eval_bytes: int | None = Field(None, ge=1)
    text_files: list[Path] = Field(default_factory=list)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(8, ge=1)
    reconstruction_windows: int = Field(4, ge=0, description="Windows per text decoded greedily from codes.")
    quality_benchmark: Path | None = Field(None, description="A bench/quality.py JSON: its plain-model bars.")
    tracking: bool = True


class EvaluateResult(BaseModel):
    out_dir: Path
    report_json: Path
    report_md: Path
    plots: list[Path]
    metrics: dict[str, float]
    data_hash: str | None
    mlflow_run_id: str | None = None
    block_bits: dict[str, list[list[float]]] = Field(
        default_factory=dict, description="Per scored text (split or file): [bytes, bits] of each window."
    )


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "lm_eval", "abstractinator", "mlflow"):
        try:
            found[package] = version(package.replace("_", "-"))
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def use_offline_hub_settings() -> None:
    """Hub access for lm-eval/datasets only when the hub answers (or the user says so through HF_HUB_OFFLINE);
    their caches live in the data home."""
    from components.evaluation.lm_eval_tasks import hub_reachable
    from components.infrastructure.settings import get_settings

    os.environ.setdefault("HF_HOME", str((get_settings().data_home / "hf").resolve()))
    if "HF_HUB_OFFLINE" not in os.environ and not hub_reachable():
        # Without these, datasets/lm-eval retry the network for minutes before failing.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def local_tasks_dir(data_dir: Path | None) -> Path:
    """The folder of generated `<task>_local.yaml` files, written (and the data fetched) on first use."""
    from components.data.eval_data import ensure_lm_eval_data
    from components.evaluation.lm_eval_tasks import write_local_tasks
    from components.infrastructure.settings import get_settings

    settings = get_settings()
    candidates = [d / "eval" / "lm_eval" for d in (data_dir, settings.default_prepared_dir) if d is not None]
    lm_eval_data = next((d for d in candidates if d.is_dir()), None)
    if lm_eval_data is None:
        lm_eval_data = settings.default_prepared_dir / "eval" / "lm_eval"
        ensure_lm_eval_data(lm_eval_data, settings.downloads_dir)
    tasks_dir = lm_eval_data.parent / "lm_eval_tasks"
    write_local_tasks(lm_eval_data, tasks_dir)
    return tasks_dir


def run_lm_eval(
    model,
    model_args: str | None,
    tasks: list[str],
    data_dir: Path | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str | None = None,
    device: str | None = None,
) -> dict:
    """lm-eval's simple_evaluate over `tasks` (local ones found via the generated include path); returns its
    full results dict. `model` is a model name ("hier_ae", "hf") with `model_args`, or an LM instance."""
    from components.evaluation.lm_eval_tasks import DEFAULT_TASKS, LOCAL_SUFFIX, hub_offline, localize_task_names

    use_offline_hub_settings()
    import lm_eval
    from lm_eval.tasks import TaskManager

    import components.evaluation.hier_ae_lm  # noqa: F401  (registers hier_ae)

    tasks, changed = localize_task_names(tasks, hub_offline())
    if changed:
        log.info(
            "offline_tasks",
            note="the hub is offline: standard tasks run on local data",
            tasks=", ".join(f"{t} -> {t}_local" for t in changed),
        )
    local = {task + LOCAL_SUFFIX for task in DEFAULT_TASKS}
    manager = TaskManager()
    unknown = [task for task in tasks if task not in manager.all_tasks and task not in local]
    if unknown:
        raise EvaluationError(f"unknown lm-eval task(s): {', '.join(unknown)} (see `lm_eval ls tasks`)")
    if any(task in local for task in tasks):  # only then fetch the offline data and write the local YAMLs
        manager = TaskManager(include_path=str(local_tasks_dir(data_dir)))
    kwargs = {"model_args": model_args} if isinstance(model, str) else {}
    return lm_eval.simple_evaluate(
        model=model,
        tasks=tasks,
        limit=limit,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        device=device,
        task_manager=manager,
        **kwargs,
    )


def _compression_entries(params: EvaluateParams, loaded, data_dir: Path | None) -> dict:
    from components.data.eval_data import CANTERBURY_TEXTS, ensure_canterbury_data
    from components.evaluation.compression_eval import evaluate_compressions, split_windows, text_windows
    from components.infrastructure.settings import get_settings

    config, device = loaded.config, loaded.device
    length, batch = config.data.sequence_length, params.batch_size
    texts, hashes = {}, {}
    if params.compression and data_dir is not None:
        for split in params.splits:
            texts[split] = split_windows(data_dir, split, length, batch, params.max_eval_bytes)
    files = list(params.text_files)
    if params.compression and params.canterbury:
        folder = data_dir / "eval" / "canterbury" if data_dir is not None else None
        if folder is None or not all((folder / f"{name}.txt").is_file() for name in CANTERBURY_TEXTS):
            folder = get_settings().default_prepared_dir / "eval" / "canterbury"
            ensure_canterbury_data(folder, get_settings().downloads_dir)
        files = [folder / f"{name}.txt" for name in CANTERBURY_TEXTS] + files
    for path in files:
        if not Path(path).is_file():
            raise EvaluationError(f"{path}: no such text file")
        name = Path(path).stem if Path(path).suffix == ".txt" else Path(path).name
        limit = params.max_eval_bytes or TEXT_FILE_DEFAULT_MAX_BYTES
        with Path(path).open("rb") as handle:
            data = handle.read(limit)  # the compressors see the same bytes; never more than the cap is read
        if params.max_eval_bytes is None and Path(path).stat().st_size > limit:
            log.warning("text_file_capped", file=str(path), scored_bytes=limit, hint="--max-eval-bytes sets the cap")
        texts[name] = _with_progress(text_windows(data, length, batch), name)
        hashes[name] = hashlib.sha256(data).hexdigest()  # what was scored (a golden set is pinned by it)
    # All texts in one call: their reconstruction windows are decoded together (compression_eval.py).
    entries = evaluate_compressions(loaded.model, texts, device, params.reconstruction_windows)
    for name, digest in hashes.items():
        entries[name]["sha256"] = digest
    return entries


def _with_progress(batches, name: str):
    """The text's batches (a WindowBatches: it knows their count), with a progress bar on a terminal (quiet in
    logs and pipelines) that starts when the scoring of this text does."""
    yield from tqdm(batches, desc=f"scoring {name}", unit="batch", disable=None, leave=False)


def evaluate(params: EvaluateParams) -> EvaluateResult:
    from components.data.shards import load_manifest
    from components.data.train_data import resolve_training_data
    from components.evaluation.eval_report import flat_metrics, write_report
    from components.evaluation.model_loading import load_model

    loaded = load_model(params.checkpoint, params.device)
    config = loaded.config
    require_bits(loaded.model, params.checkpoint)
    data_dir = resolve_training_data(config, params.data_dir) if params.compression else params.data_dir
    data_hash = load_manifest(data_dir).data_hash if data_dir is not None else loaded.checkpoint.get("data_hash")
    compression = _compression_entries(params, loaded, data_dir)
    block_bits = {name: entry.pop("window_bits") for name, entry in compression.items()}

    lm_eval_results = {}
    if params.tasks:
        from components.evaluation.conditional_code_length import HierarchicalAEScorer
        from components.evaluation.hier_ae_lm import HierarchicalAELM

        scorer = HierarchicalAEScorer(loaded.model, loaded.device, config.data.sequence_length, params.batch_size)
        output = run_lm_eval(
            HierarchicalAELM(scorer=scorer), None, params.tasks, data_dir, params.limit, params.num_fewshot
        )
        lm_eval_results = output["results"]
    if not compression and not lm_eval_results:
        raise EvaluationError("nothing to evaluate: enable compression, or give tasks or text files")

    metrics = flat_metrics(compression, lm_eval_results)
    report = {
        "checkpoint": params.checkpoint,
        "step": loaded.checkpoint.get("global_step"),
        "data_hash": data_hash,
        "training_data_hash": loaded.checkpoint.get("data_hash"),
        "config_hash": loaded.checkpoint.get("config_hash"),
        "git_commit": loaded.checkpoint.get("git_commit"),
        "versions": versions(),
        "settings": {
            "sequence_length": config.data.sequence_length,
            "max_eval_bytes": params.max_eval_bytes,
            "limit": params.limit,
            "num_fewshot": params.num_fewshot,
            "device": str(loaded.device),
        },
        "compression": compression,
        "lm_eval": lm_eval_results,
        "metrics": metrics,
    }
    if params.quality_benchmark is not None:
        try:
            report["quality_benchmark"] = json.loads(Path(params.quality_benchmark).read_text())
        except (OSError, ValueError) as error:
            raise EvaluationError(f"{params.quality_benchmark}: not a readable benchmark JSON ({error})") from None
    report_json, report_md, plots = write_report(report, Path(params.out_dir))
    run_id = _track(params, loaded, metrics, [report_json, report_md, *plots]) if params.tracking else None
    return EvaluateResult(
        out_dir=params.out_dir,
        report_json=report_json,
        report_md=report_md,
        plots=plots,
        metrics=metrics,
        data_hash=data_hash,
        mlflow_run_id=run_id,
        block_bits=block_bits,
    )


def _track(params: EvaluateParams, loaded, metrics: dict[str, float], files: list[Path]) -> str | None:
    from components.infrastructure.tracking import RunTracker, resolve_tracking_uri

    config = loaded.config
    tracker = RunTracker(
        experiment=config.logging.project_name or "Default",
        run_name=f"{config.logging.run_name}-evaluate",
        tracking_uri=resolve_tracking_uri(config.logging.project_name),
        run_id=loaded.checkpoint.get("mlflow_run_id"),
        unsent_path=Path(params.out_dir) / "mlflow_unsent.jsonl",
    )
    tracker.log_metrics(
        {f"eval/{key}": value for key, value in metrics.items()}, step=int(loaded.checkpoint.get("global_step") or 0)
    )
    tracker.set_tags({"evaluated_checkpoint": params.checkpoint})
    for path in files:
        tracker.log_artifact(path, "evaluation")
    tracker.close()
    return tracker.run_id
