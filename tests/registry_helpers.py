"""Model versions with real evidence (a signed attestation bound to a weights file, a report, the candidate run's
params), made without training: what the registry tests promote; the gate as a separate process; the registry's
consistency."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

from components.infrastructure import signing
from components.registry import promote as registry
from components.registry.attestation import PAIRED_BITS_FILE, Attestation, ScoredChampion, write_signed
from components.registry.gate_evidence import attestation_of, record_evidence, sha256_of
from components.registry.gate_rules import GateRules
from components.registry.paired_interval import PairedResult, paired_interval


def experiment_id(client, name: str = "candidates", artifact_root: Path | None = None) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:  # a sqlite store would otherwise put artifacts in ./mlruns of the working directory
        return client.create_experiment(name, artifact_location=artifact_root.as_uri() if artifact_root else None)
    except MlflowException:  # another process made it first
        return client.get_experiment_by_name(name).experiment_id


@functools.cache
def _test_key() -> tuple[str, str]:
    """An Ed25519 key pair for this test process (the evaluation's key in production): (private key file, public
    PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    path = Path(tempfile.mkdtemp(prefix="abstractinator-test-key-")) / "evaluation.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return str(path), public.decode()


@pytest.fixture(autouse=True)
def evaluation_key(monkeypatch):
    """The evaluation's key pair, as the evaluate task (private) and the gate (public) find it. Test modules opt
    in with `from tests.registry_helpers import evaluation_key  # noqa: F401`."""
    private, public = _test_key()
    monkeypatch.setenv(signing.PRIVATE_KEY_ENV, private)
    monkeypatch.setenv(signing.PUBLIC_KEY_ENV, public)
    return private, public


def attested_bits(client, name: str, version: str) -> float:
    attestation = attestation_of(client, client.get_model_version(name, version))
    return attestation.metrics["test_bits_per_byte"]


def add_version(
    client,
    name: str,
    bpb: float,
    share: float = 0.5,
    artifact_root: Path | None = None,
    spread: float = 0.005,
    against: str | None = "champion",
    weights: bool = True,
    block_bits: tuple[list[float], list[float], list[int]] | None = None,
    copy_weights_of: Path | None = None,
) -> str:
    """A version whose evaluation measured `bpb` test bits per byte and live code share `share`, scored beside the
    current champion (against="champion"; None: as if there were none) with a paired interval of +-`spread`
    around the difference, attested and signed as the evaluation step does, with a weights file of its own
    (`weights` False: attested, but its registered model lacks the file). `block_bits` (challenger bits, champion
    bits, bytes of each block): the paired result is computed from them, as the evaluation does, and they are
    kept in the signed paired_bits.json. `copy_weights_of`: its weights are a copy of that file (e.g. those of
    another version), not random bytes."""
    metrics = {"test_bits_per_byte": bpb, "live_code_share_L0": share}
    experiment = experiment_id(client, artifact_root=artifact_root)
    champion = registry.alias_version(client, name, registry.CHAMPION) if against == "champion" else None
    scored, paired = None, None
    if champion is not None:
        champion_attestation = attestation_of(client, champion)
        champion_bpb = champion_attestation.metrics["test_bits_per_byte"]
        difference = bpb - champion_bpb
        scored = ScoredChampion(
            version=str(champion.version), weights_sha256=champion_attestation.challenger_weights_sha256
        )
        paired = PairedResult(
            champion_version=str(champion.version),
            challenger_bits_per_byte=bpb,
            champion_bits_per_byte=champion_bpb,
            difference=difference,
            low=difference - spread,
            high=difference + spread,
            confidence=0.95,
            blocks=10,
            bytes=1000,
            seed=0,
            resamples=2000,
        )
    if champion is not None and block_bits is not None:
        paired = paired_interval(*block_bits, str(champion.version))
    candidate = client.create_run(experiment, run_name="candidate").info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        weights_file = Path(tmp) / "model" / "artifacts" / "model.pt"
        weights_file.parent.mkdir(parents=True)
        weights_file.write_bytes(copy_weights_of.read_bytes() if copy_weights_of else os.urandom(256))
        if weights:
            client.log_artifact(candidate, str(weights_file), "model/artifacts")
        report = Path(tmp) / "report.json"
        report.write_text(json.dumps({"metrics": metrics, "checkpoint": "test"}))
        bits_file = Path(tmp) / PAIRED_BITS_FILE
        ours, theirs, sizes = block_bits or ([], [], [])
        blocks = {"bytes_bits": [[n, b] for n, b in zip(sizes, ours, strict=True)]}
        blocks["champion"] = [[n, b] for n, b in zip(sizes, theirs, strict=True)]
        bits_file.write_text(json.dumps({"blocks": {"test": blocks}}))
        attestation = Attestation(
            model_name=name,
            challenger_weights_sha256=sha256_of(weights_file),
            champion=scored,
            data_hash="d",
            golden_sha256="g",
            code_identity="c",
            config_hash="h",
            metrics=metrics,
            paired=paired,
            paired_bits_sha256=sha256_of(bits_file),
            report_sha256=sha256_of(report),
            evaluated_at="2026-01-01T00:00:00Z",
        )
        files = write_signed(attestation, Path(tmp))
        lineage = {"eval_run_id": "e", "data_hash": "d", "code_identity": "c", "stage2_run_id": "s2"}
        lineage["challenger_weights_sha256"] = sha256_of(weights_file)  # as the promote step logs it
        record_evidence(client, candidate, [report, bits_file, *files], lineage)
    client.set_terminated(candidate)
    tags = registry.version_tags(metrics, {"data_hash": "d", "git_commit": "c", "config_hash": "h"})
    return registry.register_version(client, name, f"runs:/{candidate}/model", tags, run_id=candidate)


REPO = Path(__file__).resolve().parents[1]
RULES_ANY = GateRules(min_improvement=0.0, max_bits_per_byte=None)


def promote_argv(name: str, version: str, *flags: str) -> list[str]:
    """`abstractinator registry promote` of one version, in its own process, as a pipeline's gate runs it."""
    command = ["registry", "promote", "--model-name", name, "--version", version, *flags]
    return [sys.executable, "-m", "abstractinator", *command]


def gate_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    """The environment of a gate process: this checkout's code and the given tracking server."""
    return {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": tracking_uri, **extra}


def assert_consistent(client, name: str) -> list[dict]:
    """One chain of applied decisions whose last champion is the alias, and tags that agree with it."""
    records = registry.history(client, name)
    champion, latest = None, {}
    for record in records:
        assert record["state"] == "applied", record
        assert record["champion_before"] == str(champion), records
        champion = record["champion_after"] if record["champion_after"] != "None" else None
        latest[record["version"]] = record
    for version, record in latest.items():  # each version's tags are those of its latest decision
        tags = client.get_model_version(name, version).tags
        assert tags.get("gate.audit_run") == record["run_id"] and tags["gate.decision"] == record["action"], tags
    alias = registry.alias_version(client, name, registry.CHAMPION)
    assert (str(alias.version) if alias else None) == champion
    with pytest.raises(Exception, match="(?i)not found|does not exist"):
        client.get_registered_model(f"{name}.gate-lock")  # released
    return records


def invoke_served(server, port: int, log: Path, texts: list[str], timeout_s: float = 180) -> list[dict]:
    """The predictions of a started `mlflow models serve` (process `server`, logging to `log`) for `texts`: waits
    for its /ping (failing with the log's path when the process ends first or `timeout_s` passes), then one POST
    to /invocations (mlflow's scoring server protocol: {"inputs": [...]} in, {"predictions": [...]} out)."""
    import urllib.request

    from tests.servers import wait_for

    def ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
            return response.status == 200

    wait_for(ready, timeout_s, f"mlflow models serve (log: {log})", server)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps({"inputs": texts}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]
