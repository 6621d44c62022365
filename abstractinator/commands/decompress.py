"""`abstractinator decompress IN OUT [--model M]`: restore a file made by `abstractinator compress`.

Without --model, the model recorded in the file's header is loaded. The file is refused (one line, exit 2) when
it is not a compressed file, has an unknown format version, is truncated or corrupted (checked against the
sha256 of its payload, then of its content), or was made with another model (sha256 of the weights). The output
is written atomically: nothing partial is left on failure.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "decompress",
        help="restore a file made by `compress` (verified against its sha256)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="compressed file")
    parser.add_argument("output", type=Path, help="file to write (atomically)")
    parser.add_argument("--model", default=None, help="the model it was made with (default: the header's)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from abstractinator.commands.compress import report
    from components.codec.file_format import CodecError
    from components.codec.files import check_model, decompress_file, read_verified_header
    from components.codec.model_source import load_codec_model

    if args.output.resolve() == args.input.resolve():
        raise CodecError(f"{args.output}: the output would overwrite the input")
    header = read_verified_header(args.input)  # a damaged file is refused before a model is loaded
    location = args.model or header.model.source
    if location is None:
        raise CodecError(f"{args.input}: the header names no model; pass --model")
    loaded = load_codec_model(location)
    check_model(loaded.model, header, args.input)
    summary = decompress_file(loaded.model, args.input, args.output, progress=not args.no_progress)
    report(summary, args.json, "decompressed")
    return 0
