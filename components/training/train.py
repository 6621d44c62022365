"""The training step: one function behind `python train.py`, `abstractinator train`, `dvc repro` and the kfp
stage-1 / stage-2 components.

Stages: `stage1` pretrains compressors + expanders (no top LM) and can write them to save_base_components_path;
`stage2` loads such a base (`load_base_from`), freezes it and trains only the top LM; `joint` trains everything.

Dependable by construction: AdamW with decay exclusions, gradient accumulation, clipping, warmup + decay, bf16
autocast on CUDA (fp32 master weights), fp32 on CPU; checkpoints with everything needed for an exact resume
(model, optimizer, scheduler, RNG, step, data position, codebook-reset buffers, unsent metrics, MLflow run id),
written atomically; SIGTERM (a Kubernetes eviction) saves a checkpoint before exiting; MLflow metrics are
queued, never blocking training.

Fails early and plainly: output folders are checked for writability before the first step, a bad
`load_base_from` is one CheckpointError line, and the first non-finite loss or gradient stops the run
(`TrainingDiverged`, exit 2) without writing a checkpoint from it; the MLflow run then ends FAILED.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from components.data.byte_windows import ByteWindowLoader
from components.data.shards import load_manifest
from components.data.train_data import resolve_training_data
from components.infrastructure.logs import get_logger
from components.infrastructure.provenance import config_hash, flatten, git_commit
from components.infrastructure.redaction import redact
from components.infrastructure.storage import StorageError, fetch_file, is_s3, publish_file
from components.infrastructure.tracking import RunTracker, resolve_tracking_uri, ui_command
from components.training.checkpoints import (
    CheckpointError,
    CheckpointStore,
    ensure_writable_folder,
    load_checkpoint,
    staging_dir,
)
from components.training.distributed import DistributedContext, init_distributed, shutdown_distributed
from components.training.optimization import build_optimizer, build_scheduler
from components.training.train_metrics import StepMetrics
from components.training.validation import generate_sample, validate
from configs import ConfigError, ExpConfig
from configs.errors import torch_load_failure
from configs.schema import TOP_STATE_NEEDS_JOINT
from model import build_model, require_memory_for
from model.quantizer import EmaVectorQuantizer
from model.tokenizer import NUM_BYTES

log = get_logger(__name__)

Stage = Literal["stage1", "stage2", "joint"]
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


class TrainingDiverged(CheckpointError):
    """The loss or gradient became NaN or infinite; the message names the step (no checkpoint is written)."""


class TrainParams(BaseModel):
    """Everything a training run needs besides the config's own fields."""

    model_config = ConfigDict(extra="forbid")

    config: ExpConfig
    data_dir: Path | None = Field(None, description="Prepared shards; None: the config's dataset.")
    resume_from_checkpoint: str | None = Field(None, description="Checkpoint file, folder or s3:// URI.")
    load_base_from: str | None = Field(None, description="Stage 2: base components to load and freeze.")
    stop_after_steps: int | None = Field(
        None,
        ge=1,
        description="Stop (with a checkpoint) once this many steps are done, keeping the schedule "
        "of the full run: a time-boxed slice of a longer run, resumed later.",
    )
    progress: bool = Field(True, description="Show a progress bar (rank 0).")
    tracking: bool = Field(True, description="Log to MLflow.")


class TrainResult(BaseModel):
    stage: Stage
    steps: int
    final_checkpoint: str
    base_components: str | None
    mlflow_run_id: str | None
    tracking_uri: str | None
    data_dir: str
    data_hash: str
    config_hash: str
    git_commit: str
    final_metrics: dict[str, float]
    rank: int = Field(0, description="The distributed rank that returned this (only rank 0's is the record).")
    complete: bool = Field(description="All steps of the schedule are done (else resume from the checkpoint).")
    interrupted: bool = Field(False, description="Stopped by SIGTERM after saving a checkpoint.")


def stage_of(config: ExpConfig, load_base_from: str | None) -> Stage:
    if load_base_from:
        if config.model.expander_reads_top_state:  # stage 2 would freeze the expander that reads the top LM
            raise ConfigError(f"--load_base_from: {TOP_STATE_NEEDS_JOINT}")
        return "stage2"
    return "stage1" if config.model.top_transformer_config is None else "joint"


def _save_base_components(model: torch.nn.Module, target: str, staging: Path) -> str:
    """Write the base components to `target` (a path or s3://; S3 gets one upload of the complete file)."""
    local = staging / Path(target).name if is_s3(target) else Path(target)
    local.parent.mkdir(parents=True, exist_ok=True)
    model.save_base_components(local)
    return publish_file(local, target)


def _load_base_components(model: torch.nn.Module, location: str, staging: Path) -> None:
    """Load and freeze stage-1 base components; every way the file can be wrong is one CheckpointError line."""
    local = fetch_file(location, staging / Path(location).name)
    if not local.exists():
        raise CheckpointError(f"--load_base_from {location}: no such file")
    if not local.is_file():
        raise CheckpointError(f"--load_base_from {location}: not a file")
    try:
        state = torch.load(local, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not {"compressors", "expanders"} <= set(state):
            what = "a training checkpoint" if isinstance(state, dict) and "model_state" in state else "something else"
            raise CheckpointError(
                f"--load_base_from {location}: not a base-components file ({what}; stage 1 "
                "writes base components to its save_base_components_path)"
            )
        model.load_base_components(local, freeze=True)
    except (OSError, CheckpointError):
        raise  # unreadable file: the CLI names it and the reason
    except Exception as error:  # truncated, foreign, refused pickle, shapes that do not fit
        fit = isinstance(error, RuntimeError) and "do not fit" in str(error)  # load_base_components' own message
        detail = str(error).splitlines()[0][:300] if fit else torch_load_failure(error)
        raise CheckpointError(f"--load_base_from {location}: cannot be used ({detail})") from None


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


class _Sigterm:
    """Turns SIGTERM into a flag the loop checks after each step (checkpoint, then stop)."""

    def __init__(self) -> None:
        self.received = False
        self._previous = None

    def __enter__(self) -> _Sigterm:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. inside some runners): no handler, no flag
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Trainer:
    """One training run; `run()` does the work. Split into methods only for readability."""

    def __init__(self, params: TrainParams, context: DistributedContext):
        self.params = params
        self.config = config = params.config
        self.ctx = context
        self.device = context.device
        self.stage = stage_of(config, params.load_base_from)
        self.commit = git_commit()
        self.config_hash = config_hash(config)
        self._tmp = staging_dir("train")
        self.store = CheckpointStore(
            config.checkpoint.checkpoint_dir, keep_last=config.checkpoint.keep_last_checkpoints
        )

        if context.is_main:
            # Before any data is prepared or step is run: a folder we cannot write fails now, not at step N.
            self.store.check_writable()
            base_target = config.checkpoint.save_base_components_path
            if base_target and not is_s3(base_target):
                ensure_writable_folder(Path(base_target).parent, "base components")
            freed = self.store.remove_interrupted_writes()
            if freed:
                log.info(
                    "removed_interrupted_writes", checkpoint_dir=redact(config.checkpoint.checkpoint_dir), bytes=freed
                )
            self.data_dir = resolve_training_data(config, params.data_dir)
        context.barrier()  # other ranks wait until rank 0 has prepared the data
        if not context.is_main:
            self.data_dir = resolve_training_data(config, params.data_dir)
        self.data_hash = load_manifest(self.data_dir).data_hash
        self.loader = ByteWindowLoader(
            self.data_dir,
            "train",
            config.data.sequence_length,
            config.data.batch_size,
            config.seed,
            rank=context.rank,
            world_size=context.world_size,
        )
        self.steps_per_epoch = math.ceil(self.loader.batches_per_epoch / config.optim.gradient_accumulation_steps)
        total = config.optim.num_epochs * self.steps_per_epoch
        self.total_steps = min(total, config.optim.max_steps) if config.optim.max_steps else total

        require_memory_for(config, f"config {config.logging.run_name!r}", bytes_per_parameter=16)  # weights, Adam
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model = build_model(config).to(self.device)
        if params.load_base_from:
            _load_base_components(self.model, params.load_base_from, Path(self._tmp.name))
        resume = params.resume_from_checkpoint or config.checkpoint.resume_from_checkpoint
        checkpoint = load_checkpoint(resume) if resume else None
        if checkpoint is not None and checkpoint.get("stage") == "stage2" and not params.load_base_from:
            # A stage-2 checkpoint holds its frozen base in model_state: freeze it again before the optimizer is
            # built, so the optimizer's parameter groups are the saved ones (resume from the checkpoint alone).
            self.model.freeze_base()
            self.stage = "stage2"
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.total_steps)
        self.step = 0
        self.last_saved_step: int | None = None
        self.last_checkpoint: str | None = None
        self.run_id: str | None = None
        self.unsent_tracking: dict[str, Any] | None = None  # queued metrics a checkpoint carried over a kill

        if checkpoint is not None:
            self._resume(resume, checkpoint)
            if str(resume).endswith(".pt"):  # this step's checkpoint: a run that has nothing left to do keeps it
                self.last_saved_step, self.last_checkpoint = self.step, str(resume)
        self.ddp = DistributedDataParallel(self.model, find_unused_parameters=True) if context.enabled else None
        self.tracker = self._make_tracker() if (params.tracking and context.is_main) else None
        if self.tracker is not None and self.unsent_tracking:
            self.tracker.restore_pending(self.unsent_tracking)
        self.metrics = StepMetrics([level.codebook_size for level in config.model.compressor_level_configs])

    # -- set-up helpers -----------------------------------------------------------------------------------------
    def _resume(self, location: str, checkpoint: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(checkpoint["model_state"])
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            raise CheckpointError(f"{location}: does not fit this config's model ({first})") from None
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        self.scheduler.load_state_dict(checkpoint["scheduler_state"])
        _restore_rng(checkpoint["rng_state"], self.device)
        self.loader.load_state_dict(checkpoint["data_state"])
        self.step = int(checkpoint["global_step"])
        self.run_id = checkpoint.get("mlflow_run_id")
        self.unsent_tracking = checkpoint.get("tracking_pending")
        buffers = checkpoint.get("quantizer_reset_buffers")
        if buffers is None:
            log.warning(
                "resume_without_reset_buffers",
                checkpoint=redact(location),
                note="an older checkpoint: codebook resets after it may differ from a straight run",
            )
        else:
            for name, quantizer in self._quantizers().items():
                try:
                    quantizer.load_reset_buffer_state(buffers[name])
                except (KeyError, ValueError) as error:
                    raise CheckpointError(f"{location}: reset buffer of {name} does not fit ({error})") from None
        log.info("resumed", checkpoint=str(location), step=self.step)

    def _quantizers(self) -> dict[str, EmaVectorQuantizer]:
        return {name: m for name, m in self.model.named_modules() if isinstance(m, EmaVectorQuantizer)}

    def _make_tracker(self) -> RunTracker:
        config = self.config
        tracker = RunTracker(
            experiment=config.logging.project_name or "Default",
            run_name=config.logging.run_name,
            tracking_uri=resolve_tracking_uri(config.logging.project_name),
            run_id=self.run_id,
            batch_interval=config.logging.mlflow_batch_interval,
            unsent_path=Path(self._checkpoint_dir_local()) / "mlflow_unsent.jsonl",
        )
        if self.run_id is None:
            tracker.log_params(flatten(config.as_dict()))
        tracker.set_tags(
            {
                "git_commit": self.commit,
                "data_hash": self.data_hash,
                "config_hash": self.config_hash,
                "stage": self.stage,
                "world_size": self.ctx.world_size,
                "device": self.device.type,
            }
        )
        return tracker

    def _checkpoint_dir_local(self) -> str:
        location = self.config.checkpoint.checkpoint_dir
        return self._tmp.name if is_s3(location) else location

    # -- the loop -------------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _train_step(self) -> tuple[dict[str, float], int]:
        """One optimizer step over gradient_accumulation_steps micro-batches; returns metrics and bytes seen."""
        config, model = self.config, self.ddp or self.model
        accumulation = config.optim.gradient_accumulation_steps
        self.model.train()
        set_progress = getattr(self.model, "set_training_progress", None)
        if set_progress is not None:
            set_progress(self.step, self.total_steps)
        self.metrics.reset()
        byte_count = 0
        for micro in range(accumulation):
            batch = self.loader.next_batch()
            tokens = batch["tokens"].to(self.device, non_blocking=True)
            padding = batch["key_padding_mask"].to(self.device, non_blocking=True)
            last = micro == accumulation - 1
            sync = nullcontext() if (last or self.ddp is None) else self.ddp.no_sync()
            with sync:
                with self._autocast():
                    outputs = model(tokens, key_padding_mask=padding)
                (outputs.total_loss / accumulation).backward()
            self.metrics.add(outputs)
            byte_count += int(((tokens < NUM_BYTES) & ~padding).sum())
        averages = {key: self.ctx.mean(value) for key, value in sorted(self.metrics.averages().items())}
        # Before the update: a NaN/inf loss or gradient must not reach the weights. The averages are all-reduced,
        # so every rank takes the same decision (none is left waiting in a collective).
        self._stop_if_not_finite("loss", averages.get("loss/total_avg_accum", 0.0))
        if config.optim.gradient_clip_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.gradient_clip_norm)
            self._stop_if_not_finite("gradient norm", float(norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return averages, int(self.ctx.sum(byte_count))

    def _stop_if_not_finite(self, what: str, value: float) -> None:
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1}: the {what} is {value} (no checkpoint written from it; "
                f"lower learning_rate or check the data; the last good checkpoint is {self.last_checkpoint})"
            )

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "rng_state": _rng_state(self.device),
            "global_step": self.step,
            "epoch": self.step // max(self.steps_per_epoch, 1),
            "data_state": self.loader.state_dict(),
            "exp_config": self.config.as_dict(),
            "stage": self.stage,
            "git_commit": self.commit,
            "data_hash": self.data_hash,
            "config_hash": self.config_hash,
            "mlflow_run_id": self.tracker.run_id if self.tracker else self.run_id,
            "quantizer_reset_buffers": {name: q.reset_buffer_state() for name, q in self._quantizers().items()},
            # Metrics the server has not taken yet (it is down): a kill after this checkpoint must not lose them.
            "tracking_pending": self.tracker.pending_state() if self.tracker else None,
        }

    def save_checkpoint(self, final: bool = True) -> None:
        """Rank 0 writes; every rank calls this (it ends in a barrier). A periodic (not `final`) checkpoint that
        cannot be uploaded (S3 down after the retries) is skipped with a warning: training goes on and the next
        checkpoint tries again; a final one that fails ends the run."""
        if self.ctx.is_main:
            if self.tracker is not None:
                self.tracker.flush()  # so the run id exists and is stored in the checkpoint
            try:
                self.last_checkpoint = self.store.save(self._checkpoint_state(), self.step)
                log.info("checkpoint_saved", uri=self.last_checkpoint, step=self.step)
            except StorageError as error:
                if final:
                    raise
                log.error(
                    "checkpoint_upload_failed",
                    step=self.step,
                    error=str(error),
                    note="training goes on; the next checkpoint tries again",
                )
        self.last_saved_step = self.step
        self.ctx.barrier()

    def _periodic_work(self) -> dict[str, float]:
        """Validation and sample generation on their intervals (and at the end)."""
        config, done = self.config, self.step == self.total_steps
        extra: dict[str, float] = {}
        if self.ctx.is_main and (self.step % config.validation.validation_interval == 0 or done):
            extra = validate(self.model, self.data_dir, config, self.device)
            log.info("validation", step=self.step, **{k: round(v, 4) for k, v in extra.items()})
        if self.ctx.is_main and self.tracker and self.step % config.validation.generation_interval == 0:
            text = generate_sample(self.model, config, self.device)
            self.tracker.log_text(text, f"samples/sample_generation_step_{self.step}.txt")
        self.ctx.barrier()
        return extra

    def _checkpoint_if_due(self) -> None:
        """After the step's metrics are queued, so the checkpoint's flush sends them: a kill right after a
        checkpoint loses no metric of the steps it covers."""
        if self.step % self.config.checkpoint.checkpoint_interval == 0:
            self.save_checkpoint(final=self.step == self.total_steps)

    def run(self) -> TrainResult:
        config, ctx = self.config, self.ctx
        if ctx.is_main:
            log.info(
                "train_start",
                stage=self.stage,
                steps=self.total_steps,
                start_step=self.step,
                parameters=sum(p.numel() for p in self.model.parameters()),
                trainable=sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                data=str(self.data_dir),
                device=str(self.device),
                world_size=ctx.world_size,
            )
        peak = _peak_flops(self.device)
        n_params = sum(p.numel() for p in self.model.parameters())
        last_metrics: dict[str, float] = {}
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (ctx.is_main and self.params.progress),
            desc=f"train {self.stage}",
            unit="step",
            dynamic_ncols=True,
        )
        interrupted = False
        with _Sigterm() as sigterm, self._failed_run_marked():
            while self.step < self.total_steps:
                started = time.perf_counter()
                step_metrics, byte_count = self._train_step()
                self.step += 1
                elapsed = max(time.perf_counter() - started, 1e-9)
                step_metrics["learning_rate"] = self.scheduler.get_last_lr()[0]
                step_metrics["performance/tokens_per_sec"] = byte_count / elapsed
                if peak:
                    step_metrics["performance/mfu"] = 6 * n_params * byte_count / elapsed / (peak * ctx.world_size)
                step_metrics.update(self._periodic_work())
                last_metrics = step_metrics
                if self.tracker and (self.step % config.logging.log_interval == 0 or self.step == self.total_steps):
                    self.tracker.log_metrics(step_metrics, step=self.step)
                    self.tracker.maybe_flush(self.step)
                self._checkpoint_if_due()
                bar.update(1)
                bar.set_postfix(
                    loss=f"{step_metrics['loss/total_avg_accum']:.3f}",
                    bytes_s=f"{step_metrics['performance/tokens_per_sec']:,.0f}",
                )
                if sigterm.received and self.step < self.total_steps:  # at the last step the run is simply done
                    interrupted = True
                    log.warning("stopped_by_sigterm", step=self.step)
                    break
                if self.params.stop_after_steps and self.step >= self.params.stop_after_steps:
                    log.info("stopped_after_steps", step=self.step, of=self.total_steps)
                    break
            bar.close()
            return self._finish(last_metrics, interrupted)

    @contextmanager
    def _failed_run_marked(self) -> Iterator[None]:
        """An exception ends the MLflow run FAILED (KILLED for Ctrl-C) instead of leaving it RUNNING forever; what
        the server does not take within a short wait goes to the unsent file."""
        try:
            yield
        except BaseException as error:
            if self.tracker is not None:
                status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
                self.tracker.set_tags({"failure": redact(str(error))[:500]})
                try:
                    self.tracker.close(status=status, retry_for_s=5.0, retry_every_s=1.0)
                except Exception as close_error:  # the original error is the one to report
                    log.warning("tracking_close_failed", error=redact(str(close_error))[:200])
            raise

    def _finish(self, last_metrics: dict[str, float], interrupted: bool) -> TrainResult:
        config = self.config
        if self.last_saved_step != self.step:
            self.save_checkpoint()
        final = self.last_checkpoint
        base = None
        complete = self.step >= self.total_steps
        if self.ctx.is_main and config.checkpoint.save_base_components_path and complete:
            base = _save_base_components(self.model, config.checkpoint.save_base_components_path, Path(self._tmp.name))
            log.info("base_components_saved", path=base)
        tracking_uri = run_id = None
        if self.tracker is not None:
            if final and not is_s3(final):  # an s3 checkpoint is already an artifact
                self.tracker.log_artifact(final, "checkpoints")
            self.tracker.close(status="FINISHED" if complete else "KILLED" if interrupted else None)
            # The real URI: in-process callers (the pipeline's curve export) connect with it; printers redact it.
            tracking_uri, run_id = self.tracker.tracking_uri, self.tracker.run_id
            log.info("mlflow_run", run_id=run_id, view=ui_command(tracking_uri))
        return TrainResult(
            stage=self.stage,
            steps=self.step,
            final_checkpoint=str(final),
            base_components=base,
            mlflow_run_id=run_id,
            tracking_uri=tracking_uri,
            data_dir=str(self.data_dir),
            data_hash=self.data_hash,
            config_hash=self.config_hash,
            git_commit=self.commit,
            final_metrics=last_metrics,
            rank=self.ctx.rank,
            complete=complete,
            interrupted=interrupted,
        )


def train(params: TrainParams) -> TrainResult:
    """Run (or resume) one training stage; see the module docstring."""
    context = init_distributed(params.config.device)
    trainer = None
    try:
        trainer = Trainer(params, context)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer._tmp.cleanup()  # downloads and S3 staging files, also when the run failed
        shutdown_distributed(context)
