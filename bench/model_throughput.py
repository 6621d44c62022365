"""Training throughput and peak memory: HierarchicalAutoencoder against a plain causal byte transformer.

For each config: build the model, build a nanoGPT-style causal byte transformer (RoPE, RMSNorm, SwiGLU, tied
embeddings, fused causal SDPA) with about the same parameter count, and time full training steps (forward,
backward, AdamW) of both on the same batches of real text (tests/data/model_text.txt), at the same sequence
length, in the same run. Steps alternate between the two models and the median is reported, so a machine
shared with other work slows both alike. Then peak memory of one training step at each --memory-seqs length
(batch 1), each in a fresh subprocess (CPU: growth of the peak RSS over the step, after resetting the
watermark; CUDA: torch.cuda.max_memory_allocated).

Prints a table and writes JSON (default bench/results/model_throughput.json) with bytes/s and the ratio
model / baseline.

    python bench/model_throughput.py                        # tiny + base, memory at 1k/4k/16k: ~3 min on 2 cores
    python bench/model_throughput.py --memory-seqs 1024 4096                                        # ~1-2 min
    python bench/model_throughput.py --configs configs/ci_config.py --steps 3 --memory-seqs 1024     # seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import load_config  # noqa: E402
from configs.runtime import choose_device  # noqa: E402
from model import build_model  # noqa: E402
from model.attention import apply_rope  # noqa: E402
from model.blocks import NORM_EPS, SwiGLU, init_weights  # noqa: E402
from model.tokenizer import BOS_ID, VOCAB_SIZE  # noqa: E402

TEXT = ROOT / "tests" / "data" / "model_text.txt"


class CausalBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_norm, self.ffn_norm = nn.RMSNorm(dim, eps=NORM_EPS), nn.RMSNorm(dim, eps=NORM_EPS)
        self.qkv, self.out = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.ffn = SwiGLU(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(B, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        pos = torch.arange(S, device=x.device)
        y = F.scaled_dot_product_attention(apply_rope(q, pos), apply_rope(k, pos), v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(B, S, D))
        return x + self.ffn(self.ffn_norm(x))


class PlainByteTransformer(nn.Module):
    """The yardstick: one causal transformer over bytes, next-byte cross-entropy."""

    def __init__(self, dim: int, layers: int, heads: int):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB_SIZE, dim)
        self.blocks = nn.ModuleList(CausalBlock(dim, heads) for _ in range(layers))
        self.norm = nn.RMSNorm(dim, eps=NORM_EPS)
        init_weights(self)

    def forward(self, tokens: torch.Tensor, key_padding_mask=None) -> dict:
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x)
        logits = self.norm(x) @ self.embedding.weight.t()  # tied, as nanoGPT
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB_SIZE).float(), tokens[:, 1:].reshape(-1))
        return {"total_loss": loss}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matching_baseline(target: int, layers: int, heads: int = 8) -> PlainByteTransformer:
    """The width (a multiple of 2*heads) whose parameter count is closest to `target`."""
    step = 2 * heads
    best, best_gap = step, None
    for dim in range(step, 4096 + step, step):
        n = VOCAB_SIZE * dim + layers * (16 * dim * dim + 2 * dim) + dim  # qkv+out 4d^2, SwiGLU 12d^2, norms
        if best_gap is None or abs(n - target) < best_gap:
            best, best_gap = dim, abs(n - target)
    return PlainByteTransformer(best, layers, heads)


def text_batches(batch: int, seq: int, count_: int, seed: int = 0) -> list[torch.Tensor]:
    data = TEXT.read_bytes()
    data = data * (1 + (seq * batch) // len(data))
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count_):
        starts = torch.randint(0, len(data) - seq, (batch,), generator=g).tolist()
        rows = [torch.tensor([BOS_ID, *data[s : s + seq - 1]]) for s in starts]
        out.append(torch.stack(rows))
    return out


class Trainer:
    """One model with its AdamW; `step(tokens)` returns the seconds one training step took."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model, self.device = model.to(device).train(), device
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(self, tokens: torch.Tensor) -> float:
        tokens = tokens.to(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = self.model(tokens)
        self.optimizer.zero_grad(set_to_none=True)
        out.total_loss.backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def time_training(models: list[nn.Module], batches: list[torch.Tensor], warmup: int, device) -> list[float]:
    """Median seconds per training step (forward, backward, AdamW) of each model. Steps alternate between the
    models, so a machine shared with other work slows them alike; the first `warmup` steps are not timed."""
    trainers = [Trainer(m, device) for m in models]
    times: list[list[float]] = [[] for _ in models]
    for i, tokens in enumerate(batches):
        for trainer, record in zip(trainers, times, strict=True):
            seconds = trainer.step(tokens)
            if i >= warmup:
                record.append(seconds)
    return [sorted(t)[len(t) // 2] for t in times]


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss_kib() -> int:
    """Reset the peak-RSS watermark (Linux: clear_refs 5) and return the current RSS, in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS") or 0
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_kib() -> int:
    return _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def load_for_bench(path: str, max_segment_len: int):
    config = load_config(path)
    if max_segment_len > 0:
        levels = [
            level.as_dict() | {"max_segment_len": max_segment_len} for level in config.model.compressor_level_configs
        ]
        levels = [level | {"min_segment_len": min(level["min_segment_len"], max_segment_len)} for level in levels]
        config = config.updated(compressor_level_configs=levels)
    return config


def memory_worker(args) -> None:
    """One training step at --seq with batch 1 in this (fresh) process; prints JSON with the peak."""
    device = torch.device(args.device)
    config = load_for_bench(args.configs[0], args.max_segment_len)
    model = build_model(config)
    if args.kind == "baseline":
        model = matching_baseline(count(model), args.baseline_layers)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = text_batches(1, args.seq, 1)[0].to(device)
    before_kib = reset_peak_rss_kib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = model(tokens)
    out.total_loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (peak_rss_kib() - before_kib) / 1024
    print(json.dumps({"peak_mb": peak_mb, "step_seconds": seconds}))


def measure_memory(config_path: str, kind: str, seq: int, args) -> dict:
    command = [
        sys.executable, __file__, "--memory-worker", "--configs", config_path, "--kind", kind, "--seq", str(seq),
        "--device", args.device, "--baseline-layers", str(args.baseline_layers), "--threads", str(args.threads),
        "--max-segment-len", str(args.max_segment_len),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.memory_timeout)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["configs/tiny_config.py", "configs/config.py"])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seq", type=int, default=512, help="sequence length (bytes) for throughput")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--baseline-layers", type=int, default=8)
    parser.add_argument(
        "--max-segment-len",
        type=int,
        default=4,
        help="override every level's max_segment_len (0: keep the config's). An untrained entropy model "
        "barely varies, so without a cap a window is one segment and the top LM costs nothing; 4 is close to "
        "the 3.3-4 bytes/code of a trained model",
    )
    parser.add_argument("--memory-seqs", type=int, nargs="*", default=[1024, 4096, 16384])
    parser.add_argument("--memory-config", default="configs/config.py", help="config for the memory table")
    parser.add_argument("--memory-timeout", type=int, default=900)
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads (1 is steadier on busy CPUs)"
    )
    parser.add_argument("--device", default=choose_device().type)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "model_throughput.json"))
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(args)
        return 0

    device = torch.device(args.device)
    results = {
        "device": str(device), "threads": args.threads, "seq": args.seq, "batch": args.batch,
        "steps": args.steps, "max_segment_len_override": args.max_segment_len, "throughput": [], "memory": [],
    }  # fmt: skip
    batches = text_batches(args.batch, args.seq, args.warmup + args.steps)
    print(f"device {device}, {args.threads} threads, batch {args.batch} x {args.seq} bytes, {args.steps} steps")
    print(f"{'config':<34}{'params':>10}{'bytes/s':>11}{'baseline':>10}{'bytes/s':>11}{'ratio':>8}{'bytes/code':>11}")
    for path in args.configs:
        config = load_for_bench(path, args.max_segment_len)
        torch.manual_seed(0)
        model = build_model(config)
        baseline = matching_baseline(count(model), args.baseline_layers)
        model_seconds, baseline_seconds = time_training([model, baseline], batches, args.warmup, device)
        with torch.no_grad():
            ratio = float(model.eval()(batches[0].to(device)).compression_ratios[-1])
        tokens = args.batch * args.seq
        row = {
            "config": path,
            "params": count(model),
            "bytes_per_second": tokens / model_seconds,
            "baseline_params": count(baseline),
            "baseline_dim": baseline.norm.weight.numel(),
            "baseline_layers": len(baseline.blocks),
            "baseline_bytes_per_second": tokens / baseline_seconds,
            "ratio": baseline_seconds / model_seconds,
            "top_level_bytes_per_code": 1 / ratio if ratio > 0 else None,
        }
        results["throughput"].append(row)
        print(
            f"{path:<34}{row['params'] / 1e6:>9.2f}M{row['bytes_per_second']:>11.0f}"
            f"{row['baseline_params'] / 1e6:>9.2f}M{row['baseline_bytes_per_second']:>11.0f}{row['ratio']:>8.2f}"
            f"{row['top_level_bytes_per_code'] or 0:>11.2f}"
        )
        del model, baseline

    if args.memory_seqs:
        print(f"\npeak memory of one training step, batch 1, {args.memory_config} (MB)")
        print(f"{'seq':>8}{'model':>12}{'baseline':>12}{'model s':>10}{'base s':>10}")
        for seq in args.memory_seqs:
            m = measure_memory(args.memory_config, "model", seq, args)
            b = measure_memory(args.memory_config, "baseline", seq, args)
            results["memory"].append({"config": args.memory_config, "seq": seq, "model": m, "baseline": b})

            def fmt(r, key, width, spec):
                return f"{r[key]:>{width}{spec}}" if key in r else f"{'error':>{width}}"

            print(
                f"{seq:>8}{fmt(m, 'peak_mb', 12, '.0f')}{fmt(b, 'peak_mb', 12, '.0f')}"
                f"{fmt(m, 'step_seconds', 10, '.1f')}{fmt(b, 'step_seconds', 10, '.1f')}"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
