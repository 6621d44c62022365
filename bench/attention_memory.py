"""Peak memory and time of sliding-window attention: block-local SDPA against the dense (S, S) masked reference.

Each measurement (forward + backward of one attention call, B=1) runs in a fresh subprocess: CPU peak RSS
growth over the call (watermark reset first), or torch.cuda.max_memory_allocated on CUDA. The block-local path
should grow with S * window, the dense one with S^2. Prints a table and writes JSON (default
bench/results/attention_memory.json).

    python bench/attention_memory.py                                  # S = 1k, 4k, 16k; window 128; ~1 minute
    python bench/attention_memory.py --seqs 1024 4096 --dense-max 4096
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.model_throughput import peak_rss_kib, reset_peak_rss_kib  # noqa: E402
from configs.runtime import choose_device  # noqa: E402
from model.attention import block_local_attention, dense_sliding_window_attention  # noqa: E402


def worker(args) -> None:
    device = torch.device(args.device)
    q, k, v = (torch.randn(1, args.heads, args.seq, args.head_dim, device=device, requires_grad=True) for _ in "qkv")
    kpm = torch.zeros(1, args.seq, dtype=torch.bool, device=device)
    kpm[:, -args.seq // 8 :] = True  # some trailing padding, as in training windows
    attend = block_local_attention if args.path == "block" else dense_sliding_window_attention
    before = reset_peak_rss_kib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    attend(q, k, v, args.window, kpm).sum().backward()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else (peak_rss_kib() - before) / 1024
    print(json.dumps({"peak_mb": peak, "seconds": seconds}))


def measure(path: str, seq: int, args) -> dict:
    command = [
        sys.executable, __file__, "--worker", "--path", path, "--seq", str(seq), "--window", str(args.window),
        "--heads", str(args.heads), "--head-dim", str(args.head_dim), "--device", args.device,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seqs", type=int, nargs="+", default=[1024, 4096, 8192, 16384])
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--dense-max", type=int, default=8192, help="skip the dense reference above this length")
    parser.add_argument("--device", default=choose_device().type)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "attention_memory.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="block", help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    rows = []
    print(f"{args.device}, window {args.window}, {args.heads} heads x {args.head_dim}, forward + backward, B=1")
    print(f"{'seq':>8}{'block MB':>11}{'dense MB':>11}{'block s':>9}{'dense s':>9}")
    for seq in args.seqs:
        block = measure("block", seq, args)
        dense = measure("dense", seq, args) if seq <= args.dense_max else {"skipped": f"seq > {args.dense_max}"}
        rows.append({"seq": seq, "block": block, "dense": dense})

        def cell(r, key, spec):
            return f"{r[key]:{spec}}" if key in r else f"{'-':>{spec.split('.')[0]}}"

        print(
            f"{seq:>8}{cell(block, 'peak_mb', '11.0f')}{cell(dense, 'peak_mb', '11.0f')}"
            f"{cell(block, 'seconds', '9.2f')}{cell(dense, 'seconds', '9.2f')}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": args.device, "window": args.window, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
