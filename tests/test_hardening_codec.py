"""The codec's bad inputs through the real command line, as gzip, xz and zstd would treat them: each case exits 2
with one `error:` line naming the problem, no traceback, and changes nothing it did not make: a device node made
with mknod (a copy of /dev/null), a FIFO, a symlink and its target, an existing file, a folder, the inputs.
Forged payloads (a payload changed with its sha256 and the header's checksum recomputed) are refused the same way,
with nothing written; out-of-range flags are refused by the parser. `-` reads standard input and streams to
standard output (out of process, with real pipes)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from abstractinator.cli import main
from components.codec.file_format import MAX_ADAPT_LR, MAX_ADAPT_STEPS, AdaptSettings, header_bytes, read_header
from model import build_model
from tests.codec_helpers import codec_config, save_checkpoint
from tests.model_helpers import real_text

REPO = Path(__file__).resolve().parents[1]
DATA = real_text()[:150]


def _forged(packed: Path, target: Path, forge) -> None:
    """`packed` with its payload changed by `forge`, its payload sha256 and header checksum made to match."""
    with packed.open("rb") as stream:
        header = read_header(stream, "x")
        body = bytearray(stream.read())
    forge(body)
    header = header.model_copy(update={"payload_sha256": hashlib.sha256(body).hexdigest()})
    target.write_bytes(header_bytes(header) + bytes(body))


def _all_ones(body: bytearray) -> None:
    # Every word of every segment 0xFFFFFFFF (the segments' word counts kept: one per stream group and block):
    # constriction's decoder asserts on it ("Tried to decode from compressed data that is invalid for the
    # employed entropy model").
    start = 0
    while start < len(body):
        words = int.from_bytes(body[start : start + 4], "little")
        body[start + 4 : start + 4 + 4 * words] = b"\xff" * (4 * words)
        start += 4 + 4 * words


def _one_flipped_byte(body: bytearray) -> None:
    body[len(body) // 2] ^= 0x01


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("codec-hardening")
    checkpoint = Path(save_checkpoint(build_model(codec_config(seed=0)), root / "model"))
    files = root / "files"
    files.mkdir()
    (files / "in.txt").write_bytes(DATA)
    packed = root / "packed.abz"
    assert main(["compress", str(files / "in.txt"), str(packed), "--model", str(checkpoint), "--no-progress"]) == 0
    (files / "existing.abz").write_bytes(b"the user's own file")
    (files / "pointed-at.txt").write_bytes(b"a symlink's target")
    (files / "link.abz").symlink_to(files / "pointed-at.txt")
    (files / "dangling.abz").symlink_to(files / "nowhere")
    os.mkfifo(files / "fifo")
    (files / "folder").mkdir()
    if os.geteuid() == 0:  # a copy of /dev/null, as `mknod null c 1 3` makes it
        os.mknod(files / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    _forged(packed, files / "forged-ones.abz", _all_ones)
    _forged(packed, files / "forged-flip.abz", _one_flipped_byte)
    return {"root": root, "files": files, "checkpoint": checkpoint, "packed": packed}


def _compress(source: str, output: str, *extra: str):
    return lambda w: [
        "compress",
        str(w["files"] / source),
        str(w["files"] / output),
        "--model",
        str(w["checkpoint"]),
        *extra,
    ]


def _decompress(source: str, output: str, *extra: str):
    def argv(w) -> list[str]:
        path = w["packed"] if source == "packed" else w["files"] / source
        return ["decompress", str(path), str(w["files"] / output), "--model", str(w["checkpoint"]), *extra]

    return argv


NEEDS_ROOT = "null"
CASES = {
    # outputs: special files are never replaced, with or without --force; an existing file only with --force
    "compress to a device node": (_compress("in.txt", "null"), "is a character device, not a regular file"),
    "compress --force to a device node": (_compress("in.txt", "null", "--force"), "is a character device"),
    "decompress to a device node": (_decompress("packed", "null", "--force"), "is a character device"),
    "compress to a FIFO": (_compress("in.txt", "fifo", "--force"), "is a FIFO, not a regular file"),
    "compress to a symlink": (_compress("in.txt", "link.abz", "--force"), "is a symlink, not a regular file"),
    "compress to a dangling symlink": (_compress("in.txt", "dangling.abz"), "is a symlink, not a regular file"),
    "decompress to a symlink": (_decompress("packed", "link.abz", "--force"), "is a symlink"),
    "compress to a folder": (_compress("in.txt", "folder", "--force"), "is a folder, not a regular file"),
    "compress to an existing file": (_compress("in.txt", "existing.abz"), "already exists (--force replaces it)"),
    "decompress to an existing file": (_decompress("packed", "existing.abz"), "already exists (--force"),
    "compress onto its input": (_compress("in.txt", "in.txt", "--force"), "the output would overwrite the input"),
    # inputs: what they are, not "no such file"
    "compress a FIFO": (_compress("fifo", "new.abz"), "is a FIFO, not a regular file (use - to read standard input)"),
    "compress a folder": (_compress("folder", "new.abz"), "is a folder, not a file"),
    "compress a device node": (_compress("null", "new.abz"), "is a character device, not a regular file"),
    "decompress a FIFO": (_decompress("fifo", "new.txt"), "is a FIFO, not a regular file"),
    "compress a missing file": (_compress("gone.txt", "new.abz"), "no such file"),
    # forged payloads: the sha256 and the header checksum match, the payload is not the coder's
    "decompress a forged payload (all ones)": (_decompress("forged-ones.abz", "new.txt"), "decoding failed"),
    "decompress a forged payload (one byte)": (_decompress("forged-flip.abz", "new.txt"), "decod"),
}


def _state(folder: Path) -> dict[str, tuple]:
    """Every entry as it is: kind, inode, device number, and a regular file's bytes."""
    state = {}
    for path in sorted(folder.rglob("*")):
        status = os.lstat(path)
        content = path.read_bytes() if stat.S_ISREG(status.st_mode) else None
        state[path.name] = (stat.S_IFMT(status.st_mode), status.st_ino, status.st_rdev, content)
    return state


@pytest.mark.parametrize("case", list(CASES))
def test_bad_codec_input_is_one_line_exit_2_and_changes_nothing(case, world, capsys) -> None:
    make_argv, expected = CASES[case]
    argv = make_argv(world)
    if NEEDS_ROOT in map(os.path.basename, argv) and os.geteuid() != 0:
        pytest.skip("mknod of a character device needs root")
    before = _state(world["files"])
    capsys.readouterr()
    code = main([*argv, "--no-progress"])
    stderr = capsys.readouterr().err
    problems = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert len(problems) == 1 and problems[0].startswith("error: ") and expected in problems[0], problems
    assert _state(world["files"]) == before  # nothing replaced, nothing made (no temporary file left either)


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--adapt-lr", "inf", "must be a finite number in (0, 0.1]"),
        ("--adapt-lr", "nan", "must be a finite number"),
        ("--adapt-lr", "1e6", "must be a finite number"),
        ("--adapt-lr", "0", "must be a finite number"),
        ("--adapt-lr", "fast", "not a number"),
        ("--adapt-steps", "0", "must be in [1, 1000]"),
        ("--adapt-steps", "1000000", "must be in [1, 1000]"),
        ("--workers", "0", "must be in [1, 256]"),
        ("--workers", "100000", "must be in [1, 256]"),
        ("--workers", "two", "not an integer"),
        ("--groups", "0", "must be in [1, 1024]"),
        ("--groups", "-3", "must be in [1, 1024]"),
    ],
)
def test_extreme_flags_are_refused_by_the_parser(flag, value, expected, world, capsys) -> None:
    argv = [*_compress("in.txt", "new.abz", "--adapt", flag, value)(world)]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    assert f"argument {flag}: {expected}" in stderr and "Traceback" not in stderr, stderr
    assert not (world["files"] / "new.abz").exists()


@pytest.mark.parametrize("value", ["0", "257", "nan"])
def test_decompress_refuses_a_bad_worker_count_in_one_line(value, world, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(_decompress("packed", "restored.txt", "--workers", value)(world))
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --workers: " in stderr and "Traceback" not in stderr, stderr
    assert not (world["files"] / "restored.txt").exists()


def test_the_parsers_bounds_are_the_headers_own() -> None:
    """A file made with the largest flags the parser takes is one whose header reads back."""
    AdaptSettings(learning_rate=MAX_ADAPT_LR, steps_per_round=MAX_ADAPT_STEPS)
    for bad in ({"learning_rate": float("inf")}, {"learning_rate": MAX_ADAPT_LR * 1.01}, {"steps_per_round": 0}):
        with pytest.raises(ValueError):
            AdaptSettings(**bad)


def test_force_replaces_a_regular_file(world, capsys) -> None:
    target = world["root"] / "replaced.txt"
    target.write_bytes(b"old")
    argv = _decompress("packed", "x")(world)
    argv[2] = str(target)
    assert main([*argv, "--force", "--no-progress"]) == 0
    assert target.read_bytes() == DATA


def _cli(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "abstractinator", *argv], input=stdin, capture_output=True, timeout=300, env=environment
    )


def test_dash_streams_through_pipes_and_dev_stdin_is_named(world) -> None:
    """`compress - -` and `decompress - -` through real pipes; /dev/stdin (a pipe here) is refused for what it
    is; and compress's summary goes to stderr, so stdout carries the data alone."""
    model = ["--model", str(world["checkpoint"]), "--no-progress"]
    packed = _cli("compress", "-", "-", *model, stdin=DATA)
    assert packed.returncode == 0, packed.stderr.decode()[-2000:]
    assert packed.stdout.startswith(b"ABZC")
    restored = _cli("decompress", "-", "-", *model, stdin=packed.stdout)
    assert restored.returncode == 0 and restored.stdout == DATA, restored.stderr.decode()[-2000:]
    refused = _cli("compress", "/dev/stdin", str(world["root"] / "from-stdin.abz"), *model, stdin=DATA)
    errors = [line for line in refused.stderr.decode().splitlines() if line.startswith("error: ")]
    assert refused.returncode == 2 and len(errors) == 1 and "is a FIFO, not a regular file" in errors[0], errors


def test_verify_refuses_an_archive_that_does_not_decompress_here(world, capsys, monkeypatch) -> None:
    """A coder fault (here: a bit flipped in each block as it is written, hashed as written, as a coding bug or
    bad memory would) gives exit 2 and nothing written; --no-verify writes it and says 0."""
    from components.codec import files

    real_write_block = files.write_block

    def write_a_flipped_block(stream, words):
        flipped = words.copy()
        flipped[len(flipped) // 2] ^= 1 << 7
        return real_write_block(stream, flipped)

    monkeypatch.setattr(files, "write_block", write_a_flipped_block)
    target = world["root"] / "verified.abz"
    argv = _compress("in.txt", "x")(world)
    argv[2] = str(target)
    capsys.readouterr()
    assert main([*argv, "--no-progress"]) == 2
    problems = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(problems) == 1 and "does not decompress on this machine (verification failed)" in problems[0]
    assert not target.exists()
    assert main([*argv, "--no-progress", "--no-verify"]) == 0 and target.exists()  # what exit 0 meant before


def test_a_disk_that_fills_while_compressing_is_named_and_nothing_is_left(world, tmpfs, capsys) -> None:
    """The coded blocks go to a temporary file beside the destination; when that disk fills, the error names the
    folder (a write to an unnamed temporary file has no file name of its own) and nothing stays behind."""
    disk = tmpfs("2m")
    (disk / "filler").write_bytes(b"x" * (2 * 1024 * 1024 - 16))  # every page taken
    argv = ["compress", str(world["files"] / "in.txt"), str(disk / "out.abz"), "--model", str(world["checkpoint"])]
    assert main([*argv, "--no-progress"]) == 2
    assert capsys.readouterr().err == f"error: {disk}: disk full\n"
    assert sorted(path.name for path in disk.iterdir()) == ["filler"]


def test_a_full_temporary_folder_while_verifying_is_named_not_the_destination(
    world, tmpfs, monkeypatch, capsys
) -> None:
    """--verify decodes into a scratch file in the temporary folder: when that disk is full, the message names it
    (the destination's disk had room), and nothing is published."""
    import tempfile

    disk = tmpfs("2m")
    (disk / "filler").write_bytes(b"x" * (2 * 1024 * 1024 - 16))
    monkeypatch.setattr(tempfile, "tempdir", str(disk))
    target = world["root"] / "verified-on-a-full-tmp.abz"
    argv = ["compress", str(world["files"] / "in.txt"), str(target), "--model", str(world["checkpoint"])]
    assert main([*argv, "--no-progress"]) == 2
    assert capsys.readouterr().err == f"error: {disk}: disk full\n"
    assert not target.exists()
