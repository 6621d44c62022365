"""`abstractinator compress` / `decompress`: a round trip through checkpoints, and every refusal is one line,
exit 2, with nothing partial written (an existing output file stays as it was)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from abstractinator.cli import main
from components.codec.file_format import FORMAT_VERSION, header_bytes, read_header
from model import build_model
from tests.codec_helpers import codec_config, save_checkpoint
from tests.model_helpers import real_text

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)

DATA = real_text()[:120] + b"\x00\xff"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    first = save_checkpoint(build_model(codec_config(seed=0)), root / "first")
    other = save_checkpoint(build_model(codec_config(seed=1)), root / "other")
    return first, other


@pytest.fixture(scope="module")
def packed(checkpoints, tmp_path_factory):
    folder = tmp_path_factory.mktemp("packed")
    source, target = folder / "in.bin", folder / "in.abz"
    source.write_bytes(DATA)
    assert main(["compress", str(source), str(target), "--model", checkpoints[0], "--no-progress"]) == 0
    return target


def refused(capsys, argv: list[str], fragment: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and fragment in err, err


def test_round_trip_through_the_command_line_with_a_json_summary(checkpoints, packed, tmp_path, capsys, monkeypatch):
    restored = tmp_path / "restored.bin"
    # The header names the checkpoint by its file name only: not found beside the file or here, --model is asked for
    refused(capsys, ["decompress", str(packed), str(restored)], f"made with checkpoint {Path(checkpoints[0]).name}")
    monkeypatch.chdir(Path(checkpoints[0]).parent)  # where the checkpoint is: found by its name
    capsys.readouterr()
    assert main(["decompress", str(packed), str(restored), "--json", "--no-progress"]) == 0  # model from header
    summary = json.loads(capsys.readouterr().out)
    assert restored.read_bytes() == DATA
    assert summary["bytes_in"] == len(DATA) and summary["bytes_out"] == packed.stat().st_size
    assert summary["bits_per_byte"] == pytest.approx(8 * packed.stat().st_size / len(DATA))
    assert set(summary) >= {"seconds", "bytes_per_second"}
    with packed.open("rb") as stream:
        header = read_header(stream, "x")
    assert header.bytes == len(DATA) and header.model.source == Path(checkpoints[0]).name  # no local path


def test_adaptive_round_trip_through_the_command_line_records_the_default_settings(checkpoints, tmp_path):
    from components.codec.file_format import AdaptSettings

    source, packed, restored = tmp_path / "in.bin", tmp_path / "in.abz", tmp_path / "out.bin"
    source.write_bytes(DATA)
    assert main(["compress", str(source), str(packed), "--model", checkpoints[0], "--adapt", "--no-progress"]) == 0
    with packed.open("rb") as stream:
        assert read_header(stream, "x").adapt == AdaptSettings()  # the parser's defaults are the settings' own
    assert main(["decompress", str(packed), str(restored), "--model", checkpoints[0], "--no-progress"]) == 0
    assert restored.read_bytes() == DATA


def write_variant(packed, target, header_changes=None, payload=None, version=FORMAT_VERSION):
    with packed.open("rb") as stream:
        header = read_header(stream, "x")
        body = stream.read()
    header = header.model_copy(update=header_changes or {})
    prefix = header_bytes(header)
    if version != FORMAT_VERSION:
        prefix = prefix[:4] + version.to_bytes(2, "little") + prefix[6:]
    target.write_bytes(prefix + (body if payload is None else payload))
    return target


@pytest.mark.parametrize(
    "case", ["truncated", "corrupted", "version", "version-1", "layout", "not-ours", "other-model", "diverging"]
)
def test_refusals_are_one_line_exit_2_and_leave_the_output_alone(case, checkpoints, packed, tmp_path, capsys):
    import hashlib

    damaged = tmp_path / "damaged.abz"
    blob = packed.read_bytes()
    model_args = ["--model", checkpoints[0]]
    if case == "truncated":
        damaged.write_bytes(blob[:-5])
        fragment = "truncated"
    elif case == "corrupted":
        flipped = bytearray(blob)
        flipped[-3] ^= 0x10
        damaged.write_bytes(bytes(flipped))
        fragment = "corrupted"
    elif case == "version":
        write_variant(packed, damaged, version=FORMAT_VERSION + 1)
        fragment = f"format version {FORMAT_VERSION + 1}"
    elif case == "version-1":  # the single-stream format this build replaced
        write_variant(packed, damaged, version=1)
        fragment = "format version 1 is not supported"
    elif case == "layout":  # a header whose chunk layout does not fit its length
        with packed.open("rb") as stream:
            streams = read_header(stream, "x").streams
        write_variant(packed, damaged, {"streams": streams + 1})
        fragment = "inconsistent chunk layout"
    elif case == "not-ours":
        damaged.write_bytes(DATA)
        fragment = "not an abstractinator compressed file"
    elif case == "other-model":
        damaged.write_bytes(blob)
        model_args = ["--model", checkpoints[1]]
        fragment = "made with another model"
    else:  # a payload that passes its own sha256 but decodes to something else: caught while decoding
        with packed.open("rb") as stream:
            read_header(stream, "x")
            body = bytearray(stream.read())
        body[-6] ^= 0x01
        write_variant(packed, damaged, {"payload_sha256": hashlib.sha256(body).hexdigest()}, bytes(body))
        fragment = "decod"  # "decoding diverged" or "the decoded content does not match its sha256"
    output = tmp_path / "out.bin"
    output.write_bytes(b"previous content")
    refused(capsys, ["decompress", str(damaged), str(output), "--no-progress", "--force", *model_args], fragment)
    assert output.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temporary file left"


def test_compress_refuses_bad_input_and_models_without_code_probabilities(checkpoints, tmp_path, capsys):
    missing = tmp_path / "missing.bin"
    refused(capsys, ["compress", str(missing), str(tmp_path / "x.abz"), "--model", checkpoints[0]], "no such file")
    source = tmp_path / "in.bin"
    source.write_bytes(DATA)
    continuous = save_checkpoint(build_model(codec_config(top=None)), tmp_path / "base-only")
    refused(
        capsys,
        ["compress", str(source), str(tmp_path / "x.abz"), "--model", continuous],
        "needs a probability for the top codes",
    )
    refused(
        capsys,
        ["compress", str(source), str(tmp_path / "x.abz"), "--model", str(tmp_path / "nowhere.pt")],
        "no such checkpoint",
    )
    refused(
        capsys,
        ["compress", str(source), str(tmp_path / "x.abz"), "--model", checkpoints[0], "--context", "64"],
        "--context must be in [0, 64)",
    )
    assert not (tmp_path / "x.abz").exists()


def test_registry_alias_is_pinned_to_its_version_in_the_header(checkpoints, tmp_path, settings_env, capsys):
    from mlflow import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings_env(MLFLOW_TRACKING_URI=tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("codec-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.create_registered_model("codec-test")
    for checkpoint in (checkpoints[1], checkpoints[0]):  # version 2 (the first model) becomes the champion
        version = client.create_model_version(
            "codec-test",
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags={"checkpoint_uri": checkpoint},
        )
    client.set_registered_model_alias("codec-test", "champion", version.version)
    source, packed, restored = tmp_path / "in.bin", tmp_path / "in.abz", tmp_path / "out.bin"
    source.write_bytes(DATA)
    assert main(["compress", str(source), str(packed), "--model", "models:/codec-test@champion", "--no-progress"]) == 0
    with packed.open("rb") as stream:
        header = read_header(stream, "x")
    assert (header.model.source, header.model.registry_name, header.model.registry_version) == (
        "models:/codec-test/2",
        "codec-test",
        "2",
    )
    client.set_registered_model_alias("codec-test", "champion", "1")  # the alias moves on; the file still decodes
    assert main(["decompress", str(packed), str(restored), "--no-progress"]) == 0
    assert restored.read_bytes() == DATA
    refused(
        capsys,
        ["decompress", str(packed), str(tmp_path / "o2.bin"), "--model", "models:/codec-test@champion"],
        "made with another model",
    )


@pytest.mark.parametrize(
    ("reference", "fragment"),
    [
        ("models:/codec-test", "a registry reference is models:/NAME@ALIAS or models:/NAME/VERSION"),
        ("models:/codec-test@champion", "models:/codec-test@champion: MLflow at http://user:***@127.0.0.1:"),
    ],
)
def test_a_bad_registry_reference_or_an_unreachable_registry_is_one_line(
    reference, fragment, tmp_path, settings_env, monkeypatch, capsys
):
    from tests.servers import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings_env(MLFLOW_TRACKING_URI=f"http://user:hunter2@127.0.0.1:{free_port()}")
    source = tmp_path / "in.bin"
    source.write_bytes(DATA)
    refused(capsys, ["compress", str(source), str(tmp_path / "x.abz"), "--model", reference], fragment)
    assert not (tmp_path / "x.abz").exists()


def test_the_groups_flag_states_the_codecs_own_default_and_bound():
    """The help is written out (building the parser imports no torch), so it is checked against the codec."""
    import argparse

    from abstractinator.cli import build_parser
    from components.codec.files import AUTO_GROUPS_MIN_BYTES, MAX_GROUPS

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    groups = next(a for a in commands.choices["compress"]._actions if "--groups" in a.option_strings)
    assert f"at least {AUTO_GROUPS_MIN_BYTES // 1024} KB" in groups.help and AUTO_GROUPS_MIN_BYTES % 1024 == 0
    assert groups.type(str(MAX_GROUPS)) == MAX_GROUPS
    with pytest.raises(argparse.ArgumentTypeError):
        groups.type(str(MAX_GROUPS + 1))
