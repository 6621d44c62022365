"""`abstractinator compress IN OUT --model M`: code a file with the model's two-part code (components/codec/).

M is a checkpoint file, folder or s3:// URI, or a registry reference (models:/abstractinator@champion).
`--streams` cuts the file into that many chunks (at most) coded side by side in batches: the speed, for a few
bits per chunk. `--groups` splits the streams into that many independent batches (recorded in the file), which
`--workers` processes code in parallel (default: the cores torch sees); the file is the same whatever the
number of workers. `--adapt` fine-tunes a copy of the model on the file while coding (decompress repeats it);
`--json` prints bytes in/out, bits per byte, seconds and bytes/s. Errors a user can fix: one line, exit 2.

Files as gzip, xz and zstd treat them: `-` is standard input or output; an existing output is refused unless
`--force`, which replaces a regular file only (never a device node, FIFO, symlink or folder). The result is
decoded here before it is written (`--no-verify` skips that, halving the time), so exit 0 means it decompresses
on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from abstractinator.flags import bounded_float, bounded_int


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def add_file_arguments(parser: argparse.ArgumentParser, reads: str, writes: str) -> None:
    """IN and OUT (`-`: standard input / output) and --force, the same for compress and decompress."""
    parser.add_argument("input", type=Path, help=f"{reads} (-: standard input)")
    parser.add_argument("output", type=Path, help=f"{writes} (-: standard output)")
    parser.add_argument(
        "-f", "--force", action="store_true", help="replace an existing output file (a regular file only)"
    )


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=bounded_int(1, 256),
        default=None,
        help="processes coding the stream groups side by side (default: the cores torch sees, at most the "
        "groups); the result does not depend on it",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="compress a file with a model (range coding of its two-part code)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_file_arguments(parser, "file to compress (any bytes)", "compressed file to write (atomically)")
    parser.add_argument(
        "--model", required=True, help="checkpoint file, folder, s3:// URI or models:/name@alias (or /version)"
    )
    parser.add_argument(
        "--context",
        type=int,
        default=None,
        help="tokens of the previous window that each window reads (default: window // 8, at most 16 unless --adapt)",
    )
    parser.add_argument(
        "--streams",
        type=positive_int,
        default=64,
        help="chunks of the file coded side by side as one batch (the speed; each chunk starts cold)",
    )
    parser.add_argument(
        "--groups",
        type=bounded_int(1, 1024),
        default=None,
        help="independent batches of streams, coded in parallel (recorded in the file; with --adapt each "
        "adapts its own copy of the model; default: two for inputs of at least 16 KB, one below)",
    )
    add_workers_argument(parser)
    parser.add_argument(
        "--rounds-per-block", type=positive_int, default=16, help="rounds (a window of every stream) per block"
    )
    parser.add_argument("--adapt", action="store_true", help="fine-tune the model on the file while coding")
    # AdaptSettings' defaults and bounds (file_format.py), written out so that building the parser does not
    # import torch; tests/test_hardening_codec.py checks that they agree.
    parser.add_argument(
        "--adapt-lr", type=bounded_float(0, 0.1, low_open=True), default=1e-3, help="learning rate of --adapt"
    )
    parser.add_argument(
        "--adapt-steps",
        type=bounded_int(1, 1000),
        default=4,
        help="optimizer steps after each round with --adapt",
    )
    parser.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="decode the result before writing it, so that success means it decompresses here (default: on)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def report(summary, as_json: bool, verb: str, to_stdout: bool = False) -> None:
    """The summary, on stdout; on stderr when stdout carries the data itself (OUT is -)."""
    if to_stdout:
        print(json.dumps(summary.model_dump()) if as_json else f"{verb} {summary.bytes_in} bytes", file=sys.stderr)
    elif as_json:
        print(json.dumps(summary.model_dump(), indent=2))
    else:
        print(
            f"{verb} {summary.bytes_in} bytes <-> {summary.bytes_out} bytes ({summary.bits_per_byte:.3f} bits per "
            f"byte) in {summary.seconds:.1f} s ({summary.bytes_per_second:.0f} bytes/s)"
        )


def run(args: argparse.Namespace) -> int:
    from components.codec.endpoints import check_input, check_paths
    from components.codec.file_format import AdaptSettings
    from components.codec.files import CodecParams, compress_file
    from components.codec.model_source import load_codec_model

    check_paths(args.input, args.output, args.force)  # before a model is loaded
    check_input(args.input)
    adapt = AdaptSettings(learning_rate=args.adapt_lr, steps_per_round=args.adapt_steps) if args.adapt else None
    params = CodecParams(
        context=args.context,
        streams=args.streams,
        groups=args.groups,
        rounds_per_block=args.rounds_per_block,
        adapt=adapt,
    )
    loaded = load_codec_model(args.model)
    summary = compress_file(
        loaded.model,
        loaded.identity,
        args.input,
        args.output,
        params,
        progress=not args.no_progress,
        verify=args.verify,
        workers=args.workers,
    )
    report(summary, args.json, "compressed", to_stdout=str(args.output) == "-")
    return 0
