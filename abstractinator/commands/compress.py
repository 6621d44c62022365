"""`abstractinator compress IN OUT --model M`: code a file with the model's two-part code (components/codec/).

M is a checkpoint file, folder or s3:// URI, or a registry reference (models:/abstractinator@champion).
`--streams` cuts the file into that many chunks (at most) coded side by side as one batch: the speed, for a few
bits per chunk. `--adapt` fine-tunes a copy of the model on the file while coding (decompress repeats it);
`--json` prints bytes in/out, bits per byte, seconds and bytes/s. Errors a user can fix: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive (got {value})")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="compress a file with a model (range coding of its two-part code)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="file to compress (any bytes)")
    parser.add_argument("output", type=Path, help="compressed file to write (atomically)")
    parser.add_argument(
        "--model", required=True, help="checkpoint file, folder, s3:// URI or models:/name@alias (or /version)"
    )
    parser.add_argument(
        "--context",
        type=int,
        default=None,
        help="tokens of the previous window each window conditions on (default: window // 8)",
    )
    parser.add_argument(
        "--streams",
        type=positive_int,
        default=64,
        help="chunks of the file coded side by side as one batch (the speed; each chunk starts cold)",
    )
    parser.add_argument(
        "--rounds-per-block", type=positive_int, default=16, help="rounds (a window of every stream) per block"
    )
    parser.add_argument("--adapt", action="store_true", help="fine-tune the model on the file while coding")
    # AdaptSettings' defaults, written out so that building the parser does not import torch.
    parser.add_argument("--adapt-lr", type=positive_float, default=1e-3, help="learning rate of --adapt")
    parser.add_argument(
        "--adapt-steps", type=positive_int, default=4, help="optimizer steps after each round with --adapt"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def report(summary, as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps(summary.model_dump(), indent=2))
    else:
        print(
            f"{verb} {summary.bytes_in} bytes <-> {summary.bytes_out} bytes ({summary.bits_per_byte:.3f} bits per "
            f"byte) in {summary.seconds:.1f} s ({summary.bytes_per_second:.0f} bytes/s)"
        )


def run(args: argparse.Namespace) -> int:
    from components.codec.file_format import AdaptSettings, CodecError
    from components.codec.files import CodecParams, compress_file
    from components.codec.model_source import load_codec_model

    if args.output.resolve() == args.input.resolve():
        raise CodecError(f"{args.output}: the output would overwrite the input")
    adapt = AdaptSettings(learning_rate=args.adapt_lr, steps_per_round=args.adapt_steps) if args.adapt else None
    params = CodecParams(
        context=args.context, streams=args.streams, rounds_per_block=args.rounds_per_block, adapt=adapt
    )
    if not args.input.is_file():
        raise CodecError(f"{args.input}: no such file")
    loaded = load_codec_model(args.model)
    summary = compress_file(
        loaded.model, loaded.identity, args.input, args.output, params, progress=not args.no_progress
    )
    report(summary, args.json, "compressed")
    return 0
