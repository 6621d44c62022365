"""`abstractinator registry serve`: the served folder holds only what the version's signed attestation vouches for
(components/registry/verified_loading.py `verified_serving_folder`), checked on a private local copy; a tampered
registered file is refused in one line and nothing is served."""

from __future__ import annotations

import os
import py_compile
import signal
from pathlib import Path

import mlflow
import pytest
import yaml

from abstractinator.cli import main
from components.registry import promote as registry
from components.registry.gate_evidence import EvidenceError, sha256_of
from components.registry.verified_loading import serving_decision, verified_serving_folder
from tests.registry_helpers import RULES_ANY, add_version, evaluation_key, experiment_id, invoke_served  # noqa: F401
from tests.test_registry_gate_attacks import _checkpoint, _registered_pyfunc, _rewrite_mlmodel


def _tamper(client, name: str, version: str, tmp_path: Path, files: dict[str, bytes]) -> None:
    """Overwrite files of the registered model in the artifact store (public client API, no signing key)."""
    edit = tmp_path / "tamper"
    for relative, content in files.items():
        (edit / relative).parent.mkdir(parents=True, exist_ok=True)
        (edit / relative).write_bytes(content)
    client.log_model_artifacts(client.get_model_version(name, version).source.removeprefix("models:/"), str(edit))


def test_the_served_folder_is_the_attested_files_with_a_fresh_mlmodel(tmp_path) -> None:
    name = "serve-verified"
    client, version = _registered_pyfunc(tmp_path, name)
    marker, edit = tmp_path / "attacker-code-ran", tmp_path / "edit"
    edit.mkdir()
    source = tmp_path / "evil.py"
    source.write_text(f"open({str(marker)!r}, 'w').close()\nimport mlflow.models\nmlflow.models.set_model(None)\n")
    py_compile.compile(str(source), cfile=str(edit / "evil.pyc"))

    def point_at_evil(mlmodel):  # the registered MLmodel is not attested: serving must not follow it
        mlmodel["flavors"]["python_function"]["model_code_path"] = "evil.pyc"

    _rewrite_mlmodel(client, name, version, edit, point_at_evil)
    private = tmp_path / "private"
    served = verified_serving_folder(client, name, version, private)
    assert served.parent == private
    assert sha256_of(served / "artifacts" / "model.pt") == sha256_of(tmp_path / "model.pt")
    flavor = yaml.safe_load((served / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["model_code_path"] != "evil.pyc" and not (served / "evil.pyc").exists()
    prediction = mlflow.pyfunc.load_model(str(served)).predict(["hello"])  # what `mlflow models serve` loads
    assert prediction[0]["bytes"] == 5 and not marker.exists()


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("artifacts/model.pt", "its registered weights are not the weights its evaluation scored"),
        ("code/model/__init__.py", "its registered code is not the code its evaluation ran: code/model/__init__.py"),
        # the same check on other files: in the slow run, to keep the default suite under 10 minutes
        pytest.param(
            "code/model/extra_module.py",
            "its registered code is not the code its evaluation ran",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "pyfunc_model.py",
            "its registered code is not the code its evaluation ran: pyfunc_model.py",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_tampered_registered_file_is_refused(tmp_path, relative, message) -> None:
    name = "serve-tampered"
    client, version = _registered_pyfunc(tmp_path, name)
    content = _checkpoint(tmp_path / "other.pt", noise=0.5).read_bytes() if relative.endswith(".pt") else b"x = 1\n"
    _tamper(client, name, version, tmp_path, {relative: content})
    with pytest.raises(EvidenceError, match=message):
        verified_serving_folder(client, name, version, tmp_path / "private")
    assert not (tmp_path / "private" / "model").exists()  # nothing was written to serve


def test_cli_serve_writes_the_verified_folder_or_refuses_in_one_line(tmp_path, capsys) -> None:
    name = "serve-cli"
    client, version = _registered_pyfunc(tmp_path, name)
    assert registry.promote(client, name, version, RULES_ANY).action == "promoted"  # the gate's champion

    def serve(uri: str, out: Path) -> int:
        return main(["registry", "serve", uri, "--tracking-uri", client.tracking_uri, "--out", str(out)])

    out = tmp_path / "served"
    assert serve(f"models:/{name}/{version}", out) == 0
    assert (out / "MLmodel").is_file() and str(out) in capsys.readouterr().out
    assert serve(f"models:/{name}/{version}", out) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert serve(f"models:/{name}", tmp_path / "x") == 2 and "models:/NAME@ALIAS" in capsys.readouterr().err
    _tamper(client, name, version, tmp_path, {"code/configs/__init__.py": b"import os\n"})
    assert serve(f"models:/{name}@champion", tmp_path / "again") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its registered code is not the code its evaluation ran" in err
    assert not (tmp_path / "again").exists()


def _serve_out(client, capsys, uri: str, out: Path, *flags: str) -> int:
    """`registry serve URI --out OUT`; capsys then holds its output alone."""
    capsys.readouterr()
    return main(["registry", "serve", uri, "--tracking-uri", client.tracking_uri, "--out", str(out), *flags])


def test_serve_shows_the_gate_decision_and_serves_an_ungated_version_only_when_asked(tmp_path, capsys) -> None:
    """Before serving: the version's gate decision. A version the gate did not promote (never gated, refused) is
    refused in one line naming the decision, unless --allow-ungated, which serves it saying so."""
    name = "serve-gated"
    client, version = _registered_pyfunc(tmp_path, name)
    uri = f"models:/{name}/{version}"
    assert _serve_out(client, capsys, uri, tmp_path / "refused") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the gate did not promote it (never gated); --allow-ungated" in err, err
    assert not (tmp_path / "refused").exists()
    assert _serve_out(client, capsys, uri, tmp_path / "ungated", "--allow-ungated") == 0
    out = capsys.readouterr().out
    assert f"v{version} of {name}: never gated; served anyway (--allow-ungated)" in out
    assert (tmp_path / "ungated" / "MLmodel").is_file()
    assert registry.promote(client, name, version, RULES_ANY).action == "promoted"
    assert _serve_out(client, capsys, f"models:/{name}@champion", tmp_path / "champion") == 0
    out = capsys.readouterr().out
    assert f"v{version} of {name}: gate decision: promoted (" in out and "served anyway" not in out
    assert out.index("gate decision") < out.index("written to")  # shown before the folder is made
    worse = add_version(client, name, 6.0, artifact_root=tmp_path / "artifacts")
    assert registry.promote(client, name, worse, RULES_ANY).action == "refused"
    assert _serve_out(client, capsys, f"models:/{name}/{worse}", tmp_path / "worse") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the gate did not promote it (gate decision: refused (" in err
    assert "worse than the champion" in err, err


def test_serve_never_serves_weights_a_rollback_demoted(tmp_path, capsys) -> None:
    """A rollback bans the demoted weights (decision_log.rolled_back_weights): no version holding them is served,
    --allow-ungated or not; here a real, never gated version whose weights are those a rollback took the alias
    from."""
    name = "serve-banned"
    client, servable = _registered_pyfunc(tmp_path, name)
    root = tmp_path / "artifacts"
    first = add_version(client, name, 3.0, artifact_root=root)
    assert registry.promote(client, name, first, RULES_ANY).action == "promoted"
    same_weights = add_version(client, name, 2.5, artifact_root=root, copy_weights_of=tmp_path / "model.pt")
    assert registry.promote(client, name, same_weights, RULES_ANY).action == "promoted"
    registry.rollback(client, name)
    for version in (servable, same_weights):
        assert _serve_out(client, capsys, f"models:/{name}/{version}", tmp_path / "out", "--allow-ungated") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "were rolled back from champion: not served" in err, err
        assert not (tmp_path / "out").exists()
    # the version it gave champion back to (random weights here: its decision, not a served folder)
    assert serving_decision(client, name, first).startswith(f"v{first} of {name}: gate decision: rolled_back (")


@pytest.mark.slow  # starts a real scoring server (about a minute on a loaded CPU)
def test_the_checked_folder_serves_with_the_real_mlflow_models_serve(tmp_path) -> None:
    """`registry serve`'s own command and environment on a checked folder answer a real invocation request."""
    import subprocess

    from abstractinator.commands.registry import serve_command, serve_environment
    from tests.servers import free_port

    name = "serve-real"
    client, version = _registered_pyfunc(tmp_path, name)
    served = verified_serving_folder(client, name, version, tmp_path / "private")
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as handle:
        server = subprocess.Popen(
            serve_command(served, "127.0.0.1", port),
            env=serve_environment(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert invoke_served(server, port, log, ["hello"])[0]["bytes"] == 5
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
