"""The codec against the classic compressors: `abstractinator compress` (static and --adapt) beside gzip -9,
bzip2 -9, xz -9e and zstd -19 on the same bytes, in one run.

Texts: the four English Canterbury texts (alice29, asyoulik, lcet10, plrabn12), whole unless --max-bytes cuts
them, and --split-bytes of the test split. For each text and mode the file is compressed and decompressed
through components/codec/files.py, the round trip is checked byte for byte, and the sizes (header included) and
compress / decompress bytes/s are recorded. The compression report's quantized code length of the same chunks
(each chunk coded as the report codes a file) is recorded beside the static size (they must agree within 1%
plus the header).

Prints a markdown table and writes JSON (default bench/results/codec.json).

    python bench/codec.py --model CHECKPOINT [--max-bytes N] [--streams 64] [--no-static | --no-adaptive]
        [--groups 2] [--workers 1,2]   # each worker count in turn: wall and CPU seconds, identical files
    make bench-codec MODEL=CHECKPOINT
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import json
import lzma
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import zstandard  # noqa: E402

from components.codec.file_format import AdaptSettings  # noqa: E402
from components.codec.files import CodecParams, chunk_layout, compress_file, decompress_file  # noqa: E402
from components.codec.model_source import load_codec_model  # noqa: E402
from components.data.eval_data import CANTERBURY_TEXTS, ensure_canterbury_data  # noqa: E402
from components.evaluation.compression_eval import evaluate_compression, split_windows, text_windows  # noqa: E402
from components.infrastructure.atomic_files import write_text_atomic  # noqa: E402
from components.infrastructure.settings import get_settings  # noqa: E402

COMPRESSORS = {
    "gzip -9": lambda data: gzip.compress(data, compresslevel=9, mtime=0),
    "bzip2 -9": lambda data: bz2.compress(data, compresslevel=9),
    "xz -9e": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
    "zstd -19": lambda data: zstandard.ZstdCompressor(level=19).compress(data),
}


def texts(max_bytes: int | None, split_bytes: int) -> dict[str, bytes]:
    settings = get_settings()
    folder = settings.default_prepared_dir / "eval" / "canterbury"
    if not all((folder / f"{name}.txt").is_file() for name in CANTERBURY_TEXTS):
        ensure_canterbury_data(folder, settings.downloads_dir)
    chosen = {name: (folder / f"{name}.txt").read_bytes()[:max_bytes] for name in CANTERBURY_TEXTS}
    test = bytearray()
    for batch in split_windows(settings.default_prepared_dir, "test", 1024, 8, split_bytes, context=0):
        tokens = batch["tokens"][~batch["key_padding_mask"]]
        test += bytes(t for t in tokens.tolist() if t < 256)
    chosen["test split"] = bytes(test[:max_bytes])
    return chosen


def report_bytes(model, data: bytes, params: CodecParams, window: int) -> float:
    """The compression report's quantized code length in bytes of the chunks the codec codes (each as a file)."""
    _, chunk = chunk_layout(len(data), params.streams, window, params.chunk_bytes)
    bits = 0.0
    for offset in range(0, max(len(data), 1), chunk):
        piece = data[offset : offset + chunk]
        windows = text_windows(piece, window, 32, context=params.context)
        report = evaluate_compression(model, windows, torch.device("cpu"), reconstruction_windows=0)
        bits += report["quantized_bits_per_byte"] * len(piece)
    return bits / 8


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the codec's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_codec(
    loaded, data: bytes, params: CodecParams, folder: Path, workers: int | None = None, decompress: bool = True
) -> dict:
    source, packed, restored = folder / "in.bin", folder / "in.abz", folder / f"out{workers}.bin"
    source.write_bytes(data)
    started, cpu = time.perf_counter(), cpu_seconds()
    summary = compress_file(loaded.model, loaded.identity, source, packed, params, workers=workers)
    compress_seconds, compress_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    decompress_seconds = decompress_cpu = float("nan")
    if decompress:
        started, cpu = time.perf_counter(), cpu_seconds()
        decompress_file(loaded.model, packed, restored, workers=workers)
        decompress_seconds, decompress_cpu = time.perf_counter() - started, cpu_seconds() - cpu
        if restored.read_bytes() != data:
            raise SystemExit("round trip failed: the decoded bytes differ")
    return {
        "bytes": packed.stat().st_size,
        "sha256": hashlib.sha256(packed.read_bytes()).hexdigest(),
        "workers": summary.workers,
        "groups": summary.groups,
        "compress_seconds": compress_seconds,
        "compress_cpu_seconds": compress_cpu,
        "decompress_seconds": decompress_seconds,
        "decompress_cpu_seconds": decompress_cpu,
        "compress_bytes_per_s": len(data) / compress_seconds,
        "decompress_bytes_per_s": len(data) / decompress_seconds,
        "load_average": os.getloadavg()[0],
    }


def run_modes(
    loaded, data: bytes, params: CodecParams, folder: Path, workers: list[int | None], decompress: bool
) -> dict:
    """The codec with each worker count in turn (the first is the row's); the files must be identical."""
    runs = [run_codec(loaded, data, params, folder, count, decompress) for count in workers]
    if len({run["sha256"] for run in runs}) != 1:
        raise SystemExit("the file depends on the worker count")
    return {**runs[0], "by_workers": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint file/folder, s3:// or models:/name@alias")
    parser.add_argument("--max-bytes", type=int, default=None, help="bytes of each text (from its start; all)")
    parser.add_argument("--split-bytes", type=int, default=65536, help="tokens of the test split read")
    parser.add_argument("--context", type=int, default=None, help="codec context (default: the codec's)")
    parser.add_argument("--streams", type=int, default=64, help="codec streams (chunks coded side by side)")
    parser.add_argument("--adapt-streams", type=int, default=None, help="streams with --adapt (default: --streams)")
    parser.add_argument("--groups", type=int, default=CodecParams().groups, help="stream groups (the file's)")
    parser.add_argument("--adapt-groups", type=int, default=None, help="stream groups with --adapt (default: --groups)")
    parser.add_argument(
        "--workers", default=None, help="comma-separated worker counts, each run in turn (default: the codec's)"
    )
    parser.add_argument(
        "--no-decompress", action="store_true", help="compress only (a screen of settings: no round trip checked)"
    )
    parser.add_argument("--texts", default=None, help="comma-separated subset of the texts (default: all)")
    parser.add_argument("--no-static", action="store_true", help="skip the static runs and the report")
    parser.add_argument("--no-adaptive", action="store_true", help="skip the --adapt runs")
    parser.add_argument("--adapt-lr", type=float, default=AdaptSettings().learning_rate)
    parser.add_argument("--adapt-steps", type=int, default=AdaptSettings().steps_per_round)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "codec.json")
    args = parser.parse_args()
    if args.no_static and args.no_adaptive:
        parser.error("--no-static and --no-adaptive leave nothing to measure")

    loaded = load_codec_model(args.model)
    static = CodecParams(context=args.context, streams=args.streams, groups=args.groups)
    adaptive = CodecParams(
        context=args.context,
        streams=args.adapt_streams or args.streams,
        groups=args.adapt_groups or args.groups,
        adapt=AdaptSettings(learning_rate=args.adapt_lr, steps_per_round=args.adapt_steps),
    )
    window = int(loaded.model.exp_config.data.sequence_length)
    workers = [int(count) for count in args.workers.split(",")] if args.workers else [None]
    rows = []
    chosen = texts(args.max_bytes, args.split_bytes)
    if args.texts:
        chosen = {name: chosen[name] for name in args.texts.split(",")}
    for name, data in chosen.items():
        row = {"text": name, "bytes": len(data)}
        row.update({label: len(compress(data)) for label, compress in COMPRESSORS.items()})
        with tempfile.TemporaryDirectory() as tmp:
            if not args.no_static:
                row["report_quantized_bytes"] = report_bytes(loaded.model, data, static, window)
                row["static"] = run_modes(loaded, data, static, Path(tmp), workers, not args.no_decompress)
            if not args.no_adaptive:
                row["adaptive"] = run_modes(loaded, data, adaptive, Path(tmp), workers, not args.no_decompress)
        rows.append(row)
        print(json.dumps(row), flush=True)

    header = (
        "| text | bytes | model (static) | model (adaptive) | "
        + " | ".join(COMPRESSORS)
        + " | compress B/s (static / adaptive) | decompress B/s (static / adaptive) |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        static_run, adaptive_run = row.get("static"), row.get("adaptive")
        speeds = [
            " / ".join(f"{run[k]:.0f}" if run else "-" for run in (static_run, adaptive_run))
            for k in ("compress_bytes_per_s", "decompress_bytes_per_s")
        ]
        cells = [
            row["text"],
            f"{row['bytes']:,}",
            f"{static_run['bytes']:,}" if static_run else "-",
            f"{adaptive_run['bytes']:,}" if adaptive_run else "-",
            *(f"{row[c]:,}" for c in COMPRESSORS),
            *speeds,
        ]
        print("| " + " | ".join(cells) + " |")
    result = {
        "model": loaded.identity.model_dump(),
        "max_bytes": args.max_bytes,
        "streams": args.streams,
        "adapt_streams": args.adapt_streams or args.streams,
        "window": window,
        "context": args.context,
        "adapt_lr": args.adapt_lr,
        "adapt_steps": args.adapt_steps,
        "groups": args.groups,
        "adapt_groups": args.adapt_groups or args.groups,
        "workers": workers,
        "rows": rows,
    }
    write_text_atomic(args.out, json.dumps(result, indent=2))
    print("\n| text | mode | workers | bytes | compress s (wall / CPU) | decompress s (wall / CPU) | load |")
    print("|---|---|---:|---:|---|---|---:|")
    for row in rows:
        for mode in ("static", "adaptive"):
            for run in row.get(mode, {}).get("by_workers", []):
                print(
                    f"| {row['text']} | {mode} | {run['workers']} | {run['bytes']:,} | "
                    f"{run['compress_seconds']:.1f} / {run['compress_cpu_seconds']:.1f} | "
                    f"{run['decompress_seconds']:.1f} / {run['decompress_cpu_seconds']:.1f} | "
                    f"{run['load_average']:.1f} |"
                )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
