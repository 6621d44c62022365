"""Model quality at equal wall-clock: the project's model against a plain causal byte transformer.

In one run, on the config's corpus (the default corpus unless told otherwise):
1. the project's model is trained through the project's own `train()` (components/training/train.py) with the config and
   workflow given: `two-stage` (stage 1 base, stage 2 top LM on the frozen base, as `make demo` runs it) or
   `joint` (everything from the first step). Training is cut into slices (`stop_after_steps`, resumed from the
   slice's checkpoint, same schedule as one run); the budget is the wall-clock seconds of its optimizer steps
   (set-up, checkpoint writes and scoring are not counted), and the model is scored on the first --curve-bytes
   of val after each slice;
2. then a plain causal byte transformer (RoPE, RMSNorm, SwiGLU, tied embeddings: bench/model_throughput.py's)
   of about the same parameter count is trained on the same training windows (same loader, seed, batch and
   sequence length, same AdamW settings and peak learning rate, warmup then cosine to the config's min_lr over
   the *time* budget) until it has used the same seconds, scored at the same elapsed seconds (--clock wall:
   wall-clock seconds of optimizer steps, the default; --clock cpu: this process's CPU seconds of them);
3. both are scored the same way on val, test and the four Canterbury texts (the first --eval-bytes of each):
   the text is framed BOS + bytes + EOS and cut into independent windows of the config's sequence_length, every
   window coded cold; the project model's bits are its two-part code length (model/code_length.py), the plain
   model's the cross-entropy of every position after BOS; bits per byte = bits / real bytes. gzip -9, bzip2 -9,
   xz -9e and zstd -19 compress the same bytes. Beside its bits per byte the project model reports what its top
   codes carry (`CodeTally`): bits per code (the top LM's bits / codes sent), bytes per code, the codebook
   perplexity of the codes sent (exp of their usage entropy) and the top LM's share of all its bits.
   `--skip-plain` trains and scores the project model alone: a screen of configs against a plain model measured
   once at the same sequence length, budget and --eval-bytes.

The two models run back to back on the same machine, not at once: a machine shared with other work can slow
one phase more than the other, so the load average and the CPU seconds of each phase are recorded beside the
wall-clock seconds.

Prints a table; writes JSON (default bench/results/quality.json) and a PNG of val bits per byte against training
seconds for both models (same name, .png).

    python bench/quality.py                                  # demo config, demo workflow: ~15 min on 2 cores
    python bench/quality.py --workflow joint --steps 600 --slices 3
    python bench/quality.py --stage1-steps 20 --stage2-steps 10 --eval-bytes 4096 --no-canterbury   # a minute
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from model_throughput import PlainByteTransformer, count, matching_baseline  # noqa: E402

from components.data.byte_windows import ByteWindowLoader  # noqa: E402
from components.data.eval_data import CANTERBURY_TEXTS  # noqa: E402
from components.data.train_data import resolve_training_data  # noqa: E402
from components.evaluation.compression_eval import baseline_bits_per_byte, split_windows, text_windows  # noqa: E402
from components.evaluation.model_loading import load_model  # noqa: E402
from components.infrastructure.atomic_files import write_text_atomic  # noqa: E402
from components.training.optimization import build_optimizer  # noqa: E402
from components.training.stages import load_pipeline_config, stage_configs  # noqa: E402
from components.training.train import Trainer, TrainParams, train  # noqa: E402
from configs import ExpConfig  # noqa: E402
from model.code_length import position_bits  # noqa: E402
from model.tokenizer import NUM_BYTES  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "quality.json"
NEVER = 10**9  # an interval no run reaches: no validation, samples or checkpoints inside a slice


# ------------------------------------------------------------------------------------------------ scoring
def plain_bits(model: PlainByteTransformer, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """Bits per row (B,) of every non-pad position after the first under the plain model."""
    x = model.embedding(tokens)
    for block in model.blocks:
        x = block(x)
    logits = model.norm(x) @ model.embedding.weight.t()
    nats = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), tokens[:, 1:], reduction="none")
    return (nats * ~padding[:, 1:]).sum(1) / math.log(2)


class CodeTally:
    """What the project model's top codes carry, summed over scored batches: its bits (under the top LM) beside the
    expanders', how many codes were sent and how often each code was used, so the report can give bits per code,
    bytes per code, codebook perplexity and the top LM's share of the bits beside bits per byte."""

    def __init__(self, codebook_size: int) -> None:
        self.top_bits = self.level_bits = 0.0
        self.code_counts = torch.zeros(codebook_size, dtype=torch.long)

    def add(self, bits: dict) -> None:
        """`bits` is model.code_length.position_bits output for one batch."""
        self.top_bits += float(bits["top"].sum())
        self.level_bits += sum(float(level.sum()) for level in bits["levels"])
        compressed = bits["compressed"]
        sent = compressed.top_codes[compressed.top_valid].cpu()
        self.code_counts += torch.bincount(sent, minlength=len(self.code_counts))

    def result(self, real_bytes: int) -> dict:
        codes = int(self.code_counts.sum())
        used = self.code_counts[self.code_counts > 0].double() / max(codes, 1)
        total = self.top_bits + self.level_bits
        return {
            "codes": codes,
            "bits_per_code": self.top_bits / codes if codes else float("nan"),
            "bytes_per_code": real_bytes / codes if codes else float("nan"),
            "codebook_perplexity": math.exp(float(-(used * used.log()).sum())),
            "top_share": self.top_bits / total if total else float("nan"),
            "top_bits_per_byte": self.top_bits / max(real_bytes, 1),
        }


def project_bits(model, tokens: torch.Tensor, padding: torch.Tensor, tally: CodeTally | None = None) -> torch.Tensor:
    """Bits per row (B,): the two-part code length (model/code_length.py), its top codes' share added to `tally`."""
    bits = position_bits(model, tokens, padding)
    if tally is not None:
        tally.add(bits)
    return bits["top"].sum(1) + torch.stack([level.sum(1) for level in bits["levels"]]).sum(0)


@torch.no_grad()
def score(bits_fn, model, batches) -> dict:
    """Bits per byte over `batches`, and the real bytes they hold (for the compressors)."""
    was_training = model.training
    model.eval()
    bits, data = 0.0, bytearray()
    try:
        for batch in batches:
            tokens, padding = batch["tokens"], batch["key_padding_mask"]
            bits += float(bits_fn(model, tokens, padding).sum())
            is_byte = (tokens < NUM_BYTES) & ~padding
            for row, mask in zip(tokens, is_byte, strict=True):
                data += bytes(row[mask].tolist())
    finally:
        model.train(was_training)
    return {"bits_per_byte": bits / max(len(data), 1), "bytes": len(data), "data": bytes(data)}


def eval_sets(data_dir: Path, config: ExpConfig, eval_bytes: int, canterbury: bool) -> dict:
    """name -> a function giving fresh window batches (the same windows for both models)."""
    length, batch = config.data.sequence_length, 16
    sets = {split: (lambda s=split: split_windows(data_dir, s, length, batch, eval_bytes)) for split in ("val", "test")}
    if canterbury:
        folder = data_dir / "eval" / "canterbury"
        for name in CANTERBURY_TEXTS:
            data = (folder / f"{name}.txt").read_bytes()[:eval_bytes]
            sets[name] = lambda d=data: text_windows(d, length, batch)
    return sets


# ------------------------------------------------------------------------------------------------ the project model
def rusage_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_config(config: ExpConfig, checkpoint_dir: Path) -> ExpConfig:
    return config.updated(
        checkpoint_dir=str(checkpoint_dir),
        validation_interval=NEVER,
        generation_interval=NEVER,
        checkpoint_interval=NEVER,
        validation_max_bytes=config.data.sequence_length,
        keep_last_checkpoints=1,
        resume_from_checkpoint=None,
    )


def slice_ends(steps: int, slices: int) -> list[int]:
    return sorted({max(1, round(steps * (i + 1) / slices)) for i in range(slices)})


class StepClock:
    """Sums the wall-clock and CPU seconds of train()'s optimizer steps (Trainer._train_step), so set-up, data
    verification, checkpoint writes and the end-of-stage validation pass count for neither model."""

    def __init__(self) -> None:
        self.seconds = self.cpu = 0.0

    def __enter__(self) -> StepClock:
        original = self._original = Trainer._train_step

        def timed(trainer):
            started, cpu_started = time.perf_counter(), rusage_seconds()
            try:
                return original(trainer)
            finally:
                self.seconds += time.perf_counter() - started
                self.cpu += rusage_seconds() - cpu_started

        Trainer._train_step = timed
        return self

    def __exit__(self, *exc: object) -> None:
        Trainer._train_step = self._original


def train_project(args, config: ExpConfig, data_dir: Path, work: Path, curve_batches) -> dict:
    """Trains through train() in slices; returns the final checkpoint, step seconds and the curve."""
    if args.workflow == "two-stage":
        pair = stage_configs(config, args.stage1_steps, args.stage2_steps, str(work / "artifacts"), "bench")
        stages = [
            ("stage1", bench_config(pair.stage1, work / "stage1"), args.stage1_steps, None),
            ("stage2", bench_config(pair.stage2, work / "stage2"), args.stage2_steps, pair.base_components_uri),
        ]
    else:
        joint = config.updated(max_steps=args.steps)
        stages = [("joint", bench_config(joint, work / "joint"), args.steps, None)]
    curve, checkpoint = [], None
    clock = StepClock()
    for name, stage_config, steps, base in stages:
        resume = None
        for end in slice_ends(steps, args.slices):
            with clock:
                result = train(
                    TrainParams(
                        config=stage_config,
                        data_dir=data_dir,
                        resume_from_checkpoint=resume,
                        load_base_from=base,
                        stop_after_steps=end,
                        progress=False,
                        tracking=False,
                    )
                )
            seconds = clock.seconds
            resume = checkpoint = result.final_checkpoint
            point = {
                "stage": name,
                "step": result.steps,
                "seconds": seconds,
                "cpu_seconds": clock.cpu,
                "load": os.getloadavg()[0],
            }
            loaded = load_model(checkpoint, "cpu")
            if loaded.config.model.has_code_length:
                point["val_bits_per_byte"] = score(project_bits, loaded.model, curve_batches())["bits_per_byte"]
            curve.append(point)
            print(f"  project {name} step {result.steps}: {seconds:.0f}s {point.get('val_bits_per_byte', '')}")
    return {"checkpoint": checkpoint, "seconds": clock.seconds, "cpu_seconds": clock.cpu, "curve": curve}


# ------------------------------------------------------------------------------------------------ the plain model
def lr_at(config: ExpConfig, step: int, fraction: float) -> float:
    """Warmup over the config's warmup steps, then cosine to min_lr over the fraction of the time budget used."""
    peak = config.optim.learning_rate
    floor = config.optim.scheduler_specific_kwargs.get("min_lr", 0.0)
    if step < config.optim.warmup_steps:
        return peak * (step + 1) / config.optim.warmup_steps
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))


def train_plain(
    args,
    config: ExpConfig,
    model: PlainByteTransformer,
    data_dir: Path,
    budget: float,
    checkpoints: list[float],
    curve_batches,
) -> dict:
    """Trains for `budget` seconds of the --clock (wall or this process's CPU) of its optimizer steps, scoring at
    each of `checkpoints` seconds (scoring is not timed)."""
    torch.manual_seed(config.seed)
    loader = ByteWindowLoader(data_dir, "train", config.data.sequence_length, config.data.batch_size, config.seed)
    optimizer = build_optimizer(model, config.optim)
    model.train()
    seconds, cpu, step, curve = 0.0, 0.0, 0, []
    pending = sorted(checkpoints)
    while (cpu if args.clock == "cpu" else seconds) < budget:
        started, cpu_started = time.perf_counter(), rusage_seconds()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, step, (cpu if args.clock == "cpu" else seconds) / budget)
        batch = loader.next_batch()
        tokens, padding = batch["tokens"], batch["key_padding_mask"]
        count_ = (~padding[:, 1:]).sum().clamp_min(1)
        loss = plain_bits(model, tokens, padding).sum() * math.log(2) / count_
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.optim.gradient_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.gradient_clip_norm)
        optimizer.step()
        step += 1
        seconds += time.perf_counter() - started
        cpu += rusage_seconds() - cpu_started
        used = cpu if args.clock == "cpu" else seconds
        while pending and (used >= pending[0] or used >= budget):
            pending.pop(0)
            bpb = score(plain_bits, model, curve_batches())["bits_per_byte"]
            curve.append(
                {
                    "step": step,
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                    "val_bits_per_byte": bpb,
                    "load": os.getloadavg()[0],
                }
            )
            print(f"  plain step {step}: {seconds:.0f}s ({cpu:.0f} CPU s) {bpb:.3f}")
    return {"steps": step, "seconds": seconds, "cpu_seconds": cpu, "curve": curve}


# ------------------------------------------------------------------------------------------------ report
def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    clock = "cpu_seconds" if result["settings"]["clock"] == "cpu" else "seconds"
    for key, label in (("project", "Abstractinator"), ("plain", "plain byte transformer")):
        points = [p for p in result[key]["curve"] if "val_bits_per_byte" in p]
        ax.plot([p[clock] for p in points], [p["val_bits_per_byte"] for p in points], marker="o", label=label)
    xz = result["entries"]["val"]["compressors"]["xz"]
    ax.axhline(xz, color="grey", linestyle="--", label="xz -9e (val)")
    ax.set_xlabel("training seconds (wall-clock)" if clock == "seconds" else "training CPU seconds")
    ax.set_ylabel(f"val bits per byte (first {result['settings']['curve_bytes']:,} bytes)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(result: dict) -> str:
    rows = [
        "| text | bytes | model | plain | ratio | bits/code | bytes/code | code ppl | top share "
        "| gzip -9 | bzip2 -9 | xz -9e | zstd -19 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in result["entries"].items():
        c, codes = entry["compressors"], entry["codes"]
        rows.append(
            f"| {name} | {entry['bytes']:,} | {entry['model']:.3f} | {number(entry['plain'], 3)} | "
            f"{number(entry['ratio'], 2)} | "
            f"{codes['bits_per_code']:.2f} | {codes['bytes_per_code']:.2f} | {codes['codebook_perplexity']:.2f} | "
            f"{codes['top_share']:.0%} | {c['gzip']:.3f} | {c['bzip2']:.3f} | {c['xz']:.3f} | {c['zstd']:.3f} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="demo", help="config name or path (configs/<name>_config.py)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--workflow", choices=("two-stage", "joint"), default="two-stage")
    parser.add_argument("--stage1-steps", type=int, default=500)
    parser.add_argument("--stage2-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=800, help="joint workflow: training steps")
    parser.add_argument("--slices", type=int, default=3, help="curve points per stage")
    parser.add_argument("--baseline-layers", type=int, default=4)
    parser.add_argument("--eval-bytes", type=int, default=65_536, help="bytes scored per split and text")
    parser.add_argument("--curve-bytes", type=int, default=16_384, help="val bytes scored per curve point")
    parser.add_argument("--no-canterbury", action="store_true")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="the budget: wall-clock seconds of optimizer steps, or this process's CPU seconds of "
        "them (fairer on a machine shared with other work, whose load can change between phases)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both models (default: torch's; 1 is fastest on busy shared cores)",
    )
    parser.add_argument(
        "--skip-plain",
        action="store_true",
        help="train and score only the project model (a screen against a plain model measured once before at "
        "the same sequence length, budget and --eval-bytes; the JSON and table then have no plain column)",
    )
    parser.add_argument("--data", type=Path, default=None, help="prepared data dir (default: the config's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for name in ("stage1_steps", "stage2_steps", "steps", "slices", "baseline_layers", "eval_bytes", "curve_bytes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_pipeline_config(args.config, args.set).updated(device="cpu")
    except Exception as error:  # a wrong name or value: one line, exit 2
        print(f"quality: {error}".splitlines()[0], file=sys.stderr)
        return 2
    if not config.model.has_code_length:
        print("quality: the config has no top LM, so its model has no bits per byte", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = resolve_training_data(config, args.data)
    curve = lambda: split_windows(data_dir, "val", config.data.sequence_length, 16, args.curve_bytes)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as work:
        print(f"project model: {args.config} ({args.workflow}), threads {torch.get_num_threads()}")
        load_before = os.getloadavg()[0]
        project = train_project(args, config, data_dir, Path(work), curve)
        project["load_before"] = load_before
        loaded = load_model(project["checkpoint"], "cpu")
        model = loaded.model
        project_params = count(model)
        plain_model = matching_baseline(project_params, args.baseline_layers)
        key = "cpu_seconds" if args.clock == "cpu" else "seconds"
        points = [p[key] for p in project["curve"]]
        if args.skip_plain:
            plain = {"skipped": True, "steps": 0, "seconds": 0.0, "cpu_seconds": 0.0, "curve": []}
        else:
            print(f"plain model: {count(plain_model):,} parameters for {project[key]:.0f} {args.clock} seconds")
            plain = train_plain(args, config, plain_model, data_dir, project[key], points, curve)
        plain["load_before"] = load_before
        entries = {}
        for name, batches in eval_sets(data_dir, config, args.eval_bytes, not args.no_canterbury).items():
            tally = CodeTally(model.compressors[-1].quantizer.codebook.shape[0])
            ours = score(functools.partial(project_bits, tally=tally), model, batches())
            theirs = None if args.skip_plain else score(plain_bits, plain_model, batches())["bits_per_byte"]
            entries[name] = {
                "bytes": ours["bytes"],
                "model": ours["bits_per_byte"],
                "plain": theirs,
                "ratio": ours["bits_per_byte"] / theirs if theirs else None,
                "codes": tally.result(ours["bytes"]),
                "compressors": baseline_bits_per_byte(ours["data"]),
            }
    result = {
        "config": args.config,
        "overrides": args.set,
        "workflow": args.workflow,
        "steps": (
            {"stage1": args.stage1_steps, "stage2": args.stage2_steps}
            if args.workflow == "two-stage"
            else {"joint": args.steps}
        ),
        "settings": {
            "sequence_length": config.data.sequence_length,
            "batch_size": config.data.batch_size,
            "eval_bytes": args.eval_bytes,
            "curve_bytes": args.curve_bytes,
            "threads": torch.get_num_threads(),
            "order": "project then plain, back to back",
            "clock": args.clock,
        },
        "project": {**{k: v for k, v in project.items() if k != "checkpoint"}, "parameters": project_params},
        "plain": {
            **plain,
            "parameters": count(plain_model),
            "dim": plain_model.norm.weight.shape[0],
            "layers": len(plain_model.blocks),
        },
        "entries": entries,
    }
    write_text_atomic(args.out, json.dumps(result, indent=2))
    png = plot(result, args.out.with_suffix(".png"))
    print(
        f"\nproject {project_params:,} params, {project['seconds']:.0f}s; plain {count(plain_model):,} params, "
        f"{plain['steps']} steps, {plain['seconds']:.0f}s\n"
    )
    print(table(result))
    print(f"\nwrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
