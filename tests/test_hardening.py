"""Bad input through the real command line: each case exits 2 with one `error:` line naming the problem, no
traceback, and leaves every input file as it was (user folders are never cleaned, NaN never trains, a YAML bomb
never expands, a bad `--load_base_from` or `--text-file` is refused before any work)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from abstractinator.cli import main
from components.data.prepare_data import MARKER_NAME, PrepareDataParams, prepare_data
from components.training.train import TrainParams, train
from configs import load_config
from model import build_model
from tests.conftest import prepare_small_corpus, write_corpus

REPO = Path(__file__).resolve().parents[1]
CI = str(REPO / "configs/ci_config.py")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT")  # structlog's console lines (info, warnings) are not the error


class Exploit:
    """Unpickling this runs a command; a loader that honours it would create the file named."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Prepared data, a real 1-step checkpoint, user folders that look like shards, and hostile files."""
    root = tmp_path_factory.mktemp("hardening")
    corpus = prepare_small_corpus(root / "corpus", 60, seed=3)
    config = load_config(CI).updated(
        checkpoint_dir=str(root / "ckpt"), max_steps=1, validation_interval=1000, generation_interval=1000
    )
    checkpoint = Path(
        train(TrainParams(config=config, data_dir=corpus, progress=False, tracking=False)).final_checkpoint
    )
    user = root / "user"
    (user / "eval").mkdir(parents=True)
    (user / "train-2024-notes.txt").write_text("my notes\n")
    (user / "val-ideas.txt").write_text("ideas\n")
    (user / "test-00001.bin").write_bytes(b"not a shard")
    (user / "eval" / "checklist.txt").write_text("x\n")
    files = root / "files"
    files.mkdir()
    data = checkpoint.read_bytes()
    (files / "truncated.pt").write_bytes(data[: len(data) // 3])
    (files / "random.pt").write_bytes(os.urandom(4096))
    (files / "empty.pt").write_bytes(b"")
    (files / "folder.pt").mkdir()
    narrow = load_config(CI).updated(
        compressor_level_configs=[{**config.model.compressor_level_configs[0].as_dict(), "dim": 32}]
    )
    build_model(narrow).save_base_components(files / "narrow_base.pt")
    torch.save({"compressors": Exploit(root / "PWNED")}, files / "malicious.pt")
    with (files / "malicious.pkl").open("wb") as handle:
        pickle.dump(Exploit(root / "PWNED"), handle)
    bomb = ["a: &a [" + ", ".join(["x"] * 9) + "]"]  # 9**8 strings once expanded, from 300 bytes
    bomb += [
        f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]"
        for previous, name in zip("abcdefg", "bcdefgh", strict=True)
    ]
    (files / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    (files / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (files / "empty.txt").write_bytes(b"")
    (files / "exits.py").write_text("import sys\n\nsys.exit(3)\n")
    return {"root": root, "corpus": corpus, "checkpoint": checkpoint, "user": user, "files": files}


def run_cli(capsys, argv: list[str]) -> tuple[int, list[str], str]:
    code = main(argv)
    captured = capsys.readouterr()
    problems = [line for line in captured.err.splitlines() if line.strip() and not _LOG_LINE.match(line)]
    return code, problems, captured.err


def train_args(world, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        CI,
        "--no-tracking",
        "--no-progress",
        "--set",
        "max_steps=1",
        "--set",
        f"checkpoint_dir={world['root'] / 'out-ckpt'}",
        *extra,
    ]


CHECKPOINT = "the world's real checkpoint"


def with_base(name: str):
    """argv maker: one training step on the corpus with `--load_base_from files/<name>` (or the real checkpoint)."""

    def argv(world) -> list[str]:
        base = world["checkpoint"] if name == CHECKPOINT else world["files"] / name
        return train_args(world, "--data", str(world["corpus"]), "--load_base_from", str(base))

    return argv


def evaluate_text_args(world, name: str, out: str | None = None) -> list[str]:
    """The compression report of the real checkpoint over `files/<name>`, written to `root/<out>`."""
    return [
        "evaluate",
        "--checkpoint",
        str(world["checkpoint"]),
        "--no-tracking",
        "--text-file",
        str(world["files"] / name),
        "--out",
        str(world["root"] / (out or f"eval-{Path(name).stem}")),
    ]


CASES = {
    # item 1: a --data folder without a manifest is refused, never cleaned or replaced by the default corpus
    "train --data user folder": (lambda w: train_args(w, "--data", str(w["user"])), "no manifest.json"),
    "evaluate --data user folder": (
        lambda w: [
            "evaluate",
            "--checkpoint",
            str(w["checkpoint"]),
            "--compression",
            "--no-canterbury",
            "--no-tracking",
            "--data",
            str(w["user"]),
            "--out",
            str(w["root"] / "eval-out"),
        ],
        "no manifest.json",
    ),
    "prepare-data --out user folder": (
        lambda w: [
            "prepare-data",
            "--source",
            str(w["corpus"].parent / "text"),
            "--out",
            str(w["user"]),
            "--no-eval-sets",
        ],
        "not prepared by abstractinator",
    ),
    "train --data missing folder": (lambda w: train_args(w, "--data", str(w["root"] / "nowhere")), "no such folder"),
    # item 3: NaN and infinity, by field name
    "learning_rate inf": (
        lambda w: train_args(w, "--set", "learning_rate=.inf"),
        "learning_rate: Input should be a finite",
    ),
    "weight_decay nan": (
        lambda w: train_args(w, "--set", "weight_decay=.nan"),
        "weight_decay: Input should be a finite",
    ),
    "beta inf": (
        lambda w: train_args(w, "--set", "compressor_level_configs.0.beta=.inf"),
        "compressor_level_configs.0.beta",
    ),
    "min_lr -inf": (
        lambda w: train_args(w, "--set", "scheduler_specific_kwargs.min_lr=-.inf"),
        "scheduler_specific_kwargs.min_lr",
    ),
    "ffn multiplier inf": (
        lambda w: train_args(w, "--set", "compressor_level_configs.0.encoder_ffn_dim_multiplier=.inf"),
        "encoder_ffn_dim_multiplier: Input should be a finite",
    ),
    # item 8: bounded config loading
    "yaml alias bomb": (lambda w: ["config", "show", str(w["files"] / "bomb.yaml")], "aliases"),
    "json nested too deep": (lambda w: ["config", "show", str(w["files"] / "deep.json")], "nested too deeply"),
    "malicious config checkpoint": (lambda w: ["config", "show", str(w["files"] / "malicious.pt")], "malicious.pt"),
    # item 7: every --load_base_from failure
    "base missing": (with_base("missing.pt"), "no such file"),
    "base is a folder": (with_base("folder.pt"), "not a file"),
    "base truncated": (with_base("truncated.pt"), "cannot be used"),
    "base random bytes": (with_base("random.pt"), "cannot be used"),
    "base empty": (with_base("empty.pt"), "cannot be used"),
    "base is a full checkpoint": (with_base(CHECKPOINT), "not a base-components file"),
    "base shape mismatch": (with_base("narrow_base.pt"), "do not fit"),
    "base malicious pickle": (with_base("malicious.pt"), "cannot be used"),
    "resume from random bytes": (
        lambda w: train_args(w, "--data", str(w["corpus"]), "--resume_from_checkpoint", str(w["files"] / "random.pt")),
        "not a readable checkpoint",
    ),
    # item 7: evaluation inputs checked before anything is scored
    "evaluate empty text file": (lambda w: evaluate_text_args(w, "empty.txt"), "empty, nothing to score"),
    "evaluate missing text file": (lambda w: evaluate_text_args(w, "gone.txt"), "no such file"),
    # round 2: wording
    "py config calling sys.exit(3)": (
        lambda w: ["config", "show", str(w["files"] / "exits.py")],
        "called sys.exit(3); it must define exp_config",
    ),
    "evaluate --compression --config X": (
        lambda w: [*evaluate_text_args(w, "exits.py"), "--no-canterbury", "--data", str(w["corpus"]), "--config", CI],
        "the compression report uses the checkpoint's own config",
    ),
    "lm-eval unknown task": (
        lambda w: ["lm-eval", "--model", "hier_ae", "--model_args", f"checkpoint={w['checkpoint']}", "--tasks", "nope"],
        "lm-eval: Tasks not found: nope",
    ),
    # one device policy (configs/runtime.py): CUDA asked for on a machine without it is one line, before any work
    **(
        {}
        if torch.cuda.is_available()
        else {
            "train device=cuda without a GPU": (
                lambda w: train_args(w, "--data", str(w["corpus"]), "--set", "device=cuda"),
                "'cuda' was requested but no CUDA device is visible",
            )
        }
    ),
    "prepare-data bad shard size": (
        lambda w: ["prepare-data", "--out", str(w["root"] / "p"), "--shard-bytes", "-5"],
        "shard_bytes",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, world, capsys, data_home) -> None:
    make_argv, expected = CASES[case]
    before = {name: snapshot(world[name]) for name in ("user", "files", "corpus")}
    code, problems, stderr = run_cli(capsys, make_argv(world))
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    assert len(problems) == 1 and problems[0].startswith("error: "), problems
    assert expected in problems[0] and len(problems[0]) < 2100, problems[0]
    assert "weights_only" not in problems[0]  # never torch's advice to load a stranger's pickle
    assert ".partial" not in problems[0]  # never our temporary files
    assert {name: snapshot(world[name]) for name in ("user", "files", "corpus")} == before
    assert not (world["root"] / "PWNED").exists()


def parses(kind, text: str):
    try:
        return kind(text)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        return None


def float_flags() -> list[tuple[list[str], str]]:
    """Every option of every subcommand that parses a float: (subcommand path, flag), found in the parser itself
    so that a new float flag joins the table below without an edit here."""
    from abstractinator.cli import build_parser

    found = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif action.option_strings and callable(action.type) and action.type not in (str, Path):
                probes = ("0.001", "0.5", "0.9", "1.5", "100.5")
                if any(isinstance(parses(action.type, text), float) for text in probes):
                    found.append((path, action.option_strings[-1]))  # an integer or a name parses none of them

    walk(build_parser(), [])
    return found


FLOAT_FLAGS = float_flags()
EXTREMES = ["nan", "inf", "-inf", "-1", "1e300"]


def test_the_float_flag_sweep_finds_every_kind() -> None:
    flags = {(" ".join(path), flag) for path, flag in FLOAT_FLAGS}
    assert {
        ("compress", "--adapt-lr"),
        ("registry promote", "--lock-timeout"),
        ("registry rollback", "--lock-timeout"),
        ("registry promote", "--confidence"),
        ("registry promote", "--min-exact-match"),
        ("pipeline run-local", "--max-bits-per-byte"),
    } <= flags


@pytest.mark.parametrize("value", EXTREMES)
@pytest.mark.parametrize(("path", "flag"), FLOAT_FLAGS, ids=[" ".join(p) + " " + f for p, f in FLOAT_FLAGS])
def test_every_float_flag_refuses_extremes_in_one_line(path, flag, value, capsys) -> None:
    """NaN, infinity, a negative and a huge value: refused by the parser (exit 2) before any work, connection or
    file, in one `error:` line naming the flag; never a traceback."""
    with pytest.raises(SystemExit) as exit_:
        # One word (argparse takes a bare "-inf" for an option); the unknown flag after it stops the parser before
        # any work should a value get through, so that a regression fails here instead of running the command.
        main([*path, f"{flag}={value}", "--not-a-flag-of-any-command"])
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"argument {flag}: must be a finite number in" in errors[0], stderr
    assert "Traceback" not in stderr


def test_evaluation_inputs_are_refused_before_any_report_is_written(world, capsys, data_home) -> None:
    code, problems, _ = run_cli(capsys, evaluate_text_args(world, "empty.txt", out="eval-refused"))
    assert code == 2 and not (world["root"] / "eval-refused" / "report.json").exists()


def test_the_yaml_bomb_fails_fast_in_a_real_process(world) -> None:
    """Out of process, so memory and time are the command's own: refused in seconds, a message of one line."""
    result = subprocess.run(
        [
            "/usr/bin/time",
            "-f",
            "maxrss_kb=%M",
            sys.executable,
            "-m",
            "abstractinator",
            "config",
            "show",
            str(world["files"] / "bomb.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    rss_kb = int(re.search(r"maxrss_kb=(\d+)", result.stderr).group(1))
    assert rss_kb < 600_000, rss_kb  # the import of torch and friends, not 1.27 GB of aliases
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "aliases" in errors[0] and "Traceback" not in result.stderr


def test_prepare_data_claims_new_folders_and_takes_foreign_ones_only_with_force(tmp_path, capsys, data_home) -> None:
    text = tmp_path / "text"
    write_corpus(text, 20)
    fresh = tmp_path / "fresh"
    prepare_data(PrepareDataParams(source=str(text), out_dir=fresh, include_eval_sets=False))
    assert (fresh / MARKER_NAME).is_file()
    (fresh / MARKER_NAME).unlink()  # prepared before markers existed: its own manifest still vouches for it
    assert prepare_data(PrepareDataParams(source=str(text), out_dir=fresh, include_eval_sets=False)).skipped

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "train-0-mine.txt").write_text("mine")
    argv = ["prepare-data", "--source", str(text), "--out", str(foreign), "--no-eval-sets"]
    code, problems, _ = run_cli(capsys, argv)
    assert code == 2 and "--force" in problems[0]
    assert sorted(p.name for p in foreign.iterdir()) == ["train-0-mine.txt"]  # nothing written, not even a lock
    code, _, stderr = run_cli(capsys, [*argv, "--force"])
    assert code == 0, stderr
    assert (foreign / "manifest.json").is_file() and (foreign / MARKER_NAME).is_file()


@pytest.fixture
def tiny_disk(tmpfs):
    """A 2 MB tmpfs: a real ENOSPC, and a real read-only file system once remounted."""
    return tmpfs("2m")


def test_a_model_larger_than_the_machine_is_refused_in_one_line_before_allocating(world, capsys, tmp_path) -> None:
    """A typo in a size (`--set expander_dim_scale=100000`: 491 trillion parameters) used to end in a traceback
    from torch's allocator; a checkpoint whose config says as much would do the same when loaded."""
    huge = "model.expander_dim_scale=100000"
    code, problems, stderr = run_cli(capsys, train_args(world, "--set", huge))
    assert code == 2 and len(problems) == 1 and "Traceback" not in stderr, stderr
    assert problems[0].startswith("error: config ") and "491,524,166,659,585 parameters" in problems[0]
    assert "more than this machine's" in problems[0]

    from components.evaluation.model_loading import load_model
    from components.training.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    from configs import ConfigError, load_config

    forged = tmp_path / "forged.pt"
    config = load_config(Path(CI), [huge]).model_dump(mode="json")
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "exp_config": config}, forged)
    with pytest.raises(ConfigError, match=r"forged.pt \(exp_config\): the model has 491,524,166,659,585 parameters"):
        load_model(forged, device="cpu")


def test_a_full_disk_is_named_at_the_first_checkpoint(world, tiny_disk, capsys, data_home) -> None:
    code, problems, stderr = run_cli(
        capsys,
        [
            "train",
            "--config",
            CI,
            "--no-tracking",
            "--no-progress",
            "--data",
            str(world["corpus"]),
            "--set",
            "max_steps=2",
            "--set",
            "checkpoint_interval=1",
            "--set",
            f"checkpoint_dir={tiny_disk / 'ckpt'}",
        ],
    )
    assert code == 2 and "Traceback" not in stderr
    assert problems == [f"error: {tiny_disk / 'ckpt'}: disk full while writing checkpoint_step1.pt"]
    assert not list((tiny_disk / "ckpt").iterdir())  # the partial temp file is removed


def test_a_full_staging_disk_names_the_s3_checkpoint_not_our_temporary_folder(tiny_disk, monkeypatch) -> None:
    """An S3 checkpoint is written to a local staging folder first; when that disk fills, the one line names the
    checkpoint's URI (and TMPDIR, which moves the staging), never the temporary folder the user did not choose."""
    import tempfile

    from components.training.checkpoints import CheckpointError, CheckpointStore

    monkeypatch.setattr(tempfile, "tempdir", str(tiny_disk))  # where staging_dir makes its folder
    store = CheckpointStore("s3://bucket/run")
    with pytest.raises(CheckpointError) as refused:
        store.save({"model_state": {"weights": torch.zeros(1 << 20)}}, step=1)  # 4 MB on a 2 MB disk
    message = str(refused.value)
    assert message.startswith("s3://bucket/run/checkpoint_step1.pt: cannot stage it on the local disk first (disk full")
    assert str(tiny_disk) not in message and "abstractinator-ckpt" not in message
    assert not list(tiny_disk.iterdir())  # the staging folder and its partial file are gone


def test_read_only_output_folders_fail_before_any_work(world, tiny_disk, capsys, data_home) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    cases = [
        (
            train_args(world, "--data", str(world["corpus"]), "--set", f"checkpoint_dir={tiny_disk / 'ckpt'}"),
            "checkpoints cannot be written here (read-only file system)",
        ),
        (
            [
                "evaluate",
                "--checkpoint",
                str(world["checkpoint"]),
                "--no-tracking",
                "--compression",
                "--data",
                str(world["corpus"]),
                "--out",
                str(tiny_disk / "eval"),
            ],
            "read-only file system",
        ),
        (
            ["prepare-data", "--source", str(world["corpus"].parent / "text"), "--out", str(tiny_disk / "data")],
            "read-only file system",
        ),
    ]
    for argv, expected in cases:
        code, problems, stderr = run_cli(capsys, argv)
        assert code == 2 and "Traceback" not in stderr, stderr[-2000:]
        assert len(problems) == 1 and expected in problems[0], problems
        assert "train_start" not in stderr  # no step ran before the check


def test_json_output_of_prepare_data_is_still_json(tmp_path, capsys, data_home) -> None:
    write_corpus(tmp_path / "text", 10)
    code = main(
        ["prepare-data", "--source", str(tmp_path / "text"), "--out", str(tmp_path / "out"), "--no-eval-sets", "--json"]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["skipped"] is False


def test_the_lm_eval_adapter_scores_text_with_lone_surrogates() -> None:
    """lm-eval task data can hold lone surrogates, which str.encode('utf-8') refuses (a UnicodeEncodeError
    traceback); the adapter scores their bytes instead, one to one."""
    from lm_eval.api.instance import Instance

    from components.evaluation.hier_ae_lm import HierarchicalAELM, to_bytes
    from tests.test_eval_adapter import UniformByteScorer

    text = "caf\u00e9 \ud800 end"
    assert to_bytes(text).decode("utf-8", errors="surrogatepass") == text
    lm = HierarchicalAELM(scorer=UniformByteScorer())
    request = Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    (nats,) = lm.loglikelihood_rolling([request])
    assert nats == pytest.approx(-8.0 * len(to_bytes(text)) * 0.6931471805599453)
    context = Instance(request_type="loglikelihood", doc={}, arguments=("\udfff", " x"), idx=0)
    assert lm.loglikelihood([context])[0][0] == pytest.approx(-16.0 * 0.6931471805599453)


def test_a_full_disk_while_preparing_data_is_named_and_installs_nothing(tmp_path, tiny_disk, capsys, data_home) -> None:
    text = tmp_path / "big"
    text.mkdir()
    for number in range(6):  # 3 MB of text for a 2 MB disk
        (text / f"doc{number}.txt").write_bytes(os.urandom(256 * 1024).hex().encode())
    code, problems, stderr = run_cli(
        capsys, ["prepare-data", "--source", str(text), "--out", str(tiny_disk / "data"), "--no-eval-sets"]
    )
    assert code == 2 and "Traceback" not in stderr
    assert problems == [f"error: {tiny_disk / 'data'}: disk full while preparing data (nothing was installed)"]
    assert not (tiny_disk / "data" / "manifest.json").exists()
    assert not list((tiny_disk / "data").glob(".tmp-*"))  # the temp folder went with the failure


def test_registry_and_registered_model_bad_inputs_are_clear(tmp_path, capsys) -> None:
    """Issue 23's registry rows: an unknown model is named as such (not "has no challenger"); the registered model
    refuses an empty text (it reported 23.68 bits per byte) and a NaN or negative temperature (a RuntimeError deep
    in sampling) with one clear ValueError each."""
    from components.registry.pyfunc_model import AbstractinatorPyfunc

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["registry", "promote", "--tracking-uri", uri, "--model-name", "no-such-model"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]  # not mlflow's INFO
    assert errors == ["error: model 'no-such-model': not in the registry"]

    config = load_config(CI)
    checkpoint = tmp_path / "model.pt"
    torch.save({"model_state": build_model(config).state_dict(), "exp_config": config.as_dict()}, checkpoint)
    model = AbstractinatorPyfunc()
    model.load_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="^bits_per_byte of an empty text: give at least one byte$"):
        model.predict(None, [""])
    for temperature in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="^temperature must be a finite number >= 0"):
            model.predict(None, ["Once"], params={"task": "generate", "temperature": temperature, "max_new_bytes": 2})
    with pytest.raises(ValueError, match="^max_new_bytes must be >= 0"):
        model.predict(None, ["Once"], params={"task": "generate", "max_new_bytes": -1})
    assert model.predict(None, ["ab"])[0]["bytes"] == 2  # good input still works
