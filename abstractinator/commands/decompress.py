"""`abstractinator decompress IN OUT [--model M]`: restore a file made by `abstractinator compress`.

Without --model, the model recorded in the file's header is loaded. The file is refused (one line, exit 2) when
it is not a compressed file, has an unknown format version, is truncated or corrupted (checked against the
sha256 of its payload, then of its content), or was made with another model (sha256 of the weights). The output
is written atomically: nothing partial is left on failure. `-` is standard input or output; an existing output is
refused unless `--force`, which replaces a regular file only.
"""

from __future__ import annotations

import argparse

from abstractinator.commands.compress import add_file_arguments, add_workers_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "decompress",
        help="restore a file made by `compress` (verified against its sha256)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_file_arguments(parser, "compressed file", "file to write (atomically)")
    parser.add_argument("--model", default=None, help="the model it was made with (default: the header's)")
    add_workers_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from abstractinator.commands.compress import report
    from components.codec.endpoints import check_input, check_paths, is_stdio, snapshot_input
    from components.codec.files import decompress_snapshot, read_verified_header
    from components.codec.model_source import header_model_location, load_codec_model

    check_paths(args.input, args.output, args.force)
    check_input(args.input)
    with snapshot_input(args.input) as packed:
        header = read_verified_header(packed.handle, packed.name)  # a damaged file is refused before a model loads
        location = args.model or header_model_location(
            header.model.source, header.model.weights_sha256, packed.name, is_stdio(args.input)
        )
        loaded = load_codec_model(location)
        summary = decompress_snapshot(
            loaded.model, header, packed, args.output, progress=not args.no_progress, workers=args.workers
        )
    report(summary, args.json, "decompressed", to_stdout=is_stdio(args.output))
    return 0
