"""The evaluation's signing key (components/infrastructure/signing.py, `registry keygen`) and what the evaluation
step does with a champion it cannot score (pipelines/paired_evaluation.py `champion_weights`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from components.infrastructure import signing
from components.registry import promote as registry
from pipelines import training
from pipelines.paired_evaluation import ChampionProblem, champion_weights
from tests import registry_helpers
from tests.registry_helpers import evaluation_key  # noqa: F401


def test_a_local_key_is_made_once_readable_by_its_owner_alone(data_home, monkeypatch) -> None:
    monkeypatch.delenv(signing.PRIVATE_KEY_ENV)
    monkeypatch.delenv(signing.PUBLIC_KEY_ENV)
    with pytest.raises(signing.SigningError, match="no evaluation public key"):
        signing.verify(b"x", "AAAA")
    signature = signing.sign(b"attested bytes")
    private, public = signing.local_key_paths()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert private.parent == Path(data_home) / "keys" and public.is_file()
    signing.verify(b"attested bytes", signature)
    first = private.read_bytes()
    assert signing.generate_local_key() == private and private.read_bytes() == first  # kept: old evidence verifies
    with pytest.raises(signing.SigningError, match="signature does not verify"):
        signing.verify(b"attested bytes!", signature)


def test_the_public_key_of_the_settings_wins_over_the_local_one(data_home, monkeypatch) -> None:
    monkeypatch.delenv(signing.PRIVATE_KEY_ENV)
    local_signature = signing.sign(b"data")  # the local key (what a task without the Secret would sign with)
    _, cluster_public = registry_helpers._test_key()
    monkeypatch.setenv(signing.PUBLIC_KEY_ENV, cluster_public)
    with pytest.raises(signing.SigningError, match="signature does not verify"):
        signing.verify(b"data", local_signature)
    monkeypatch.setenv(signing.PUBLIC_KEY_ENV, "not a key")
    with pytest.raises(signing.SigningError, match="not a PEM public key"):
        signing.verify(b"data", local_signature)


def test_a_champion_whose_weights_are_missing_or_unverifiable_is_not_scored(tmp_path) -> None:
    root = tmp_path / "store"
    client = registry.client_for(f"sqlite:///{root}/mlflow.db")
    name = "champion-problems"
    champion = registry_helpers.add_version(client, name, 3.0, artifact_root=root / "artifacts", weights=False)
    registry.promote(client, name, champion, registry_helpers.RULES_ANY, force=True, forced_by="test")
    with pytest.raises(ChampionProblem, match=rf"^champion v{champion}: its registered model has no"):
        champion_weights(client, name, tmp_path / "download")
    good = registry_helpers.add_version(client, name, 2.0, artifact_root=root / "artifacts", against=None)
    registry.promote(client, name, good, registry_helpers.RULES_ANY, force=True, forced_by="test")
    scored, path = champion_weights(client, name, tmp_path / "download")
    assert scored.version == good and path.name == "model.pt"
    assert scored.weights_sha256 == registry_helpers.sha256_of(path)


def test_keygen_writes_a_cluster_pair_that_signs_and_verifies_and_never_overwrites_it(
    tmp_path, monkeypatch, capsys
) -> None:
    """`registry keygen --out DIR`: the private key 0600 (even under umask 0) in a 0700 folder, never printed; the
    pair is what the evaluate task signs with (the Secret's file) and the gate verifies with (the ConfigMap's PEM);
    a second run refuses (exit 2, one line) and leaves both files as they were."""
    from abstractinator.cli import main

    folder = tmp_path / "eval-signing"
    previous_umask = os.umask(0)
    try:
        assert main(["registry", "keygen", "--out", str(folder)]) == 0
    finally:
        os.umask(previous_umask)
    private, public = folder / "ed25519.pem", folder / "ed25519.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    private_pem, public_pem = private.read_bytes(), public.read_bytes()
    printed = capsys.readouterr()
    assert b"PRIVATE KEY" in private_pem and private_pem.decode() not in printed.out + printed.err
    assert "PRIVATE" not in printed.out + printed.err
    assert private.name == training.EVAL_KEY_FILE  # the key of the Secret the evaluate task mounts

    monkeypatch.setenv(signing.PRIVATE_KEY_ENV, str(private))
    monkeypatch.setenv(signing.PUBLIC_KEY_ENV, public_pem.decode())
    signing.verify(b"attested bytes", signing.sign(b"attested bytes"))

    assert main(["registry", "keygen", "--out", str(folder)]) == 2
    error = capsys.readouterr().err
    assert "already exists" in error and len(error.strip().splitlines()) == 1
    assert private.read_bytes() == private_pem and public.read_bytes() == public_pem
