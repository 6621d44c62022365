"""What the gate decides from: the evaluation's signed attestation (components/registry/attestation.py), re-read and
checked at decision time against the weights the version registers.

A version's evidence is anchored in what nobody but the evaluation task can make and nobody can change unnoticed:

- a model version's `run_id` (set when the version is created; there is no API to change it) names the
  candidate run that logged the model;
- that run holds the evaluation's `evaluation/attestation.json` and `evaluation/attestation.sig`: the signature
  must verify with the evaluation's public key (components/infrastructure/signing.py); whoever holds the MLflow
  credential can write artifacts but cannot sign, so a version registered by hand, however self-consistent its
  records, has no evidence;
- the attestation names the model, the sha256 of the weights it scored and of the code files the model carries:
  the version's registered `artifacts/model.pt` and code must hash to them, so evidence copied onto other
  weights, or code edited in the artifact store afterwards, is refused (loading one: components/registry/
  verified_loading.py).

Tags, params and metrics (appended ones included) are never read here: they mirror the evidence for people.
The candidate run's params keep the lineage (`LINEAGE_KEYS`) that `registry status` shows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import BaseModel

from components.infrastructure.file_hashes import sha256_of
from components.infrastructure.signing import SigningError
from components.registry.attestation import (
    ATTESTATION_FILE,
    PAIRED_BITS_FILE,
    SIGNATURE_FILE,
    WEIGHTS_FILE,
    Attestation,
    verified,
)
from components.registry.paired_interval import PairedResult, paired_from_bits
from components.registry.registry_lock import not_found
from configs.errors import UserError

REPORT_ARTIFACT_DIR = "evaluation"
ATTESTATION_ARTIFACT = f"{REPORT_ARTIFACT_DIR}/{ATTESTATION_FILE}"
SIGNATURE_ARTIFACT = f"{REPORT_ARTIFACT_DIR}/{SIGNATURE_FILE}"
# The candidate run's params (immutable) that say where the version came from; `registry status` shows them.
LINEAGE_KEYS = (
    "stage1_run_id",
    "stage2_run_id",
    "eval_run_id",
    "data_hash",
    "code_identity",
    "config_hash",
    "image",
    "kfp_run_id",
    "report_sha256",
    "challenger_weights_sha256",  # how the promote step finds a version of the same weights (confirmed by signature)
)


class EvidenceError(UserError):
    """The version's evidence is missing, unsigned or does not match its weights; str() is one line (it becomes a
    refusal reason)."""


class Evidence(BaseModel):
    attestation: Attestation

    @property
    def metrics(self) -> dict[str, float]:
        return self.attestation.metrics


def record_evidence(client, run_id: str, evaluation_files: list[Path], lineage: dict[str, str]) -> None:
    """Attach the evaluation's files (report.json, attestation.json, attestation.sig, paired_bits.json) and the
    lineage params to the candidate run `run_id`. Call it before the run's model is registered."""
    from mlflow.entities import Param

    for path in evaluation_files:
        client.log_artifact(run_id, str(path), REPORT_ARTIFACT_DIR)
    params = {key: str(value) for key, value in lineage.items() if value not in (None, "")}
    client.log_batch(run_id, params=[Param(key, value) for key, value in sorted(params.items())])


def _download(client, run_id: str, artifact: str, folder: str, label: str) -> Path:
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, artifact, folder))
    except MlflowException as error:
        if not_found(error) or "does not exist" in str(error).lower():
            raise EvidenceError(f"{label}: no signed evaluation attestation in its run ({artifact} missing)") from None
        raise
    except OSError:
        raise EvidenceError(f"{label}: no signed evaluation attestation in its run ({artifact} missing)") from None


def download_registered_model(client, name: str, version: str, local: Path) -> Path:
    """The version's registered model downloaded under `local`; the folder it landed in (`local` itself when the
    download failed: whatever is (not) there is then judged by local_model_problem)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    location = client.get_model_version_download_uri(name, str(version)).rstrip("/")
    try:  # a folder URI lands in a folder of its own name under dst_path
        return Path(download_artifacts(artifact_uri=location, dst_path=str(local), tracking_uri=client.tracking_uri))
    except (MlflowException, OSError):
        return Path(local)


def registered_model_problem(client, name: str, version: str, attestation: Attestation, local: Path) -> str:
    """Download the version's registered model under `local` and compare it with `attestation`
    (local_model_problem). Returns why not ("" when it matches)."""
    return local_model_problem(download_registered_model(client, name, version, local), attestation)


def local_model_problem(local: Path, attestation: Attestation) -> str:
    """Compare the model folder `local` with `attestation`: its weights and every attested code file must hash as
    attested, and no code file may be there that was not attested. Returns why not ("" when it matches)."""
    weights = local / "artifacts" / WEIGHTS_FILE
    if not weights.is_file():
        return f"its registered model has no artifacts/{WEIGHTS_FILE} to check"
    if sha256_of(weights) != attestation.challenger_weights_sha256:
        return "its registered weights are not the weights its evaluation scored (sha256)"
    changed = [path for path, digest in attestation.model_files.items() if _digest(local / path) != digest]
    present = {
        path.relative_to(local).as_posix()
        for path in local.rglob("*")
        if path.is_file() and (path.suffix == ".py" or "code" == path.relative_to(local).parts[0])
    }
    unattested = sorted(present - set(attestation.model_files)) if attestation.model_files else []
    if changed or unattested:
        return "its registered code is not the code its evaluation ran: " + ", ".join((changed + unattested)[:5])
    return ""


def _digest(path: Path) -> str | None:
    return sha256_of(path) if path.is_file() else None


def attestation_of(client, version) -> Attestation:
    """The verified attestation in the version's candidate run (the signature only; see read_evidence)."""
    label = f"v{version.version}"
    if not version.run_id:
        raise EvidenceError(f"{label} has no candidate run: no evidence")
    with tempfile.TemporaryDirectory(prefix="abstractinator-evidence-") as tmp:
        data = _download(client, version.run_id, ATTESTATION_ARTIFACT, tmp, label).read_bytes()
        signature = _download(client, version.run_id, SIGNATURE_ARTIFACT, tmp, label).read_text()
    try:
        return verified(data, signature)
    except SigningError as error:
        raise EvidenceError(f"{label}: evaluation attestation refused: {error}") from None
    except ValueError:
        raise EvidenceError(f"{label}: the signed attestation is not one this gate reads") from None


def read_evidence(client, name: str, version) -> Evidence:
    """The attestation of `version`, verified (module docstring); EvidenceError (one line) if not."""
    attestation = attestation_of(client, version)
    label = f"v{version.version}"
    if attestation.model_name != name:
        raise EvidenceError(f"{label}: its attestation is for model {attestation.model_name!r}, not {name!r}")
    with tempfile.TemporaryDirectory(prefix="abstractinator-registered-") as tmp:
        problem = registered_model_problem(client, name, str(version.version), attestation, Path(tmp))
    if problem:
        raise EvidenceError(f"{label}: {problem}")
    return Evidence(attestation=attestation)


PAIRED_BITS_ARTIFACT = f"{REPORT_ARTIFACT_DIR}/{PAIRED_BITS_FILE}"


def paired_at(client, version, attestation: Attestation, confidence: float) -> PairedResult | None:
    """The attested paired result, at `confidence`: recomputed from the run's `paired_bits.json` (its sha256 signed
    in the attestation) when the evaluation computed another level; EvidenceError when that file does not verify."""
    import json

    paired = attestation.paired
    if paired is None or paired.confidence == confidence:
        return paired
    label = f"v{version.version}"
    with tempfile.TemporaryDirectory(prefix="abstractinator-paired-") as tmp:
        bits_file = _download(client, version.run_id, PAIRED_BITS_ARTIFACT, tmp, label)
        if not attestation.paired_bits_sha256 or sha256_of(bits_file) != attestation.paired_bits_sha256:
            raise EvidenceError(f"{label}: its {PAIRED_BITS_FILE} is not the one its evaluation signed (sha256)")
        bits = json.loads(bits_file.read_text())
    try:
        return paired_from_bits(bits, paired.champion_version, confidence, paired.seed, paired.resamples)
    except ValueError as error:
        raise EvidenceError(f"{label}: {error}") from None
