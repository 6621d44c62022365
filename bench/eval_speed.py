"""The evaluation's compression report with 1 and 2 worker threads, in one run: wall and CPU seconds of each, and
the sha256 of each report's JSON (they must be equal: the workers change the time, never a number).

Texts: the first --max-bytes tokens of the prepared val and test splits (the evaluation step's compression
entries), batches of --batch-size windows, the reconstruction windows as the evaluation decodes them. Worker
counts run in the order given (`--workers 1,2,1,2` alternates them, for a loaded machine).

    python bench/eval_speed.py --model CHECKPOINT [--max-bytes 65536] [--workers 1,2,1,2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from components.evaluation.compression_eval import evaluate_compressions, split_windows  # noqa: E402
from components.evaluation.model_loading import load_model  # noqa: E402
from components.infrastructure.settings import get_settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint file/folder, s3:// or models:/name@alias")
    parser.add_argument("--max-bytes", type=int, default=65536, help="tokens of each split scored")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--reconstruction-windows", type=int, default=4)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts, run in this order")
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu")
    data_dir = get_settings().default_prepared_dir
    length = int(loaded.model.exp_config.data.sequence_length)
    print("| workers | bytes | wall s | CPU s | wall B/s | load | report sha256 |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    digests = set()
    for workers in (int(count) for count in args.workers.split(",")):
        texts = {
            split: split_windows(data_dir, split, length, args.batch_size, args.max_bytes) for split in ("val", "test")
        }
        started, cpu = time.perf_counter(), time.process_time()
        reports = evaluate_compressions(
            loaded.model, texts, torch.device("cpu"), args.reconstruction_windows, workers=workers
        )
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        scored = sum(report["bytes"] for report in reports.values())
        digest = hashlib.sha256(json.dumps(reports, sort_keys=True).encode()).hexdigest()
        digests.add(digest)
        print(
            f"| {workers} | {scored:,} | {wall:.1f} | {cpu:.1f} | {scored / wall:,.0f} | {os.getloadavg()[0]:.1f} "
            f"| {digest[:16]} |",
            flush=True,
        )
    if len(digests) != 1:
        print("the reports differ between worker counts", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
