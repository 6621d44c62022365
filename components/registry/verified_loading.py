"""Loading a registered version for use, as its signed evidence vouches for it: only its attested weights, through
this checkout's pyfunc class (components/registry/pyfunc_model.py); and the folder `registry serve` hands to
`mlflow models serve` (`verified_serving_folder`): the registered files downloaded once into a private folder,
checked there against the signed attestation, and a fresh pyfunc model written from those checked files alone;
before that, `serving_decision`: weights a rollback banned are never served, and a version the gate did not make
champion only when asked (`--allow-ungated`).

Never `mlflow.pyfunc.load_model`: that follows the registered `MLmodel`, which no attestation covers, and anyone
with the MLflow credential can rewrite its `model_code_path` (MLflow runs a sourceless `.pyc` too) or its
checkpoint path to run other code or load other weights. A module of its own because it imports the model
package: the gate's evidence checks (gate_evidence.py), which data preparation's skip check imports, do not.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from components.registry.attestation import WEIGHTS_FILE
from components.registry.gate_evidence import (
    EvidenceError,
    attestation_of,
    download_registered_model,
    local_model_problem,
    read_evidence,
    sha256_of,
)
from configs.errors import UserError


class VerifiedModel:
    """The attested weights in this checkout's pyfunc class: `predict(texts, params)` as a loaded pyfunc model's."""

    def __init__(self, weights: Path) -> None:
        from components.registry.pyfunc_model import AbstractinatorPyfunc

        self.python_model = AbstractinatorPyfunc()
        self.python_model.load_checkpoint(weights)  # torch.load(weights_only=True): no pickled code runs

    def predict(self, data, params: dict | None = None) -> list[dict]:
        return self.python_model.predict(None, data, params)


def load_verified_model(client, name: str, version: str) -> VerifiedModel:
    """The version's registered weights, checked against its signed attestation, loaded by this checkout's pyfunc
    class. Nothing else of the registered model is used: not its `MLmodel` (whose `model_code_path` and artifact
    paths anyone with the MLflow credential can rewrite to run other code or load other weights), not its code
    copies; so no file the evaluation did not attest is read, let alone run."""
    from mlflow.artifacts import download_artifacts

    model_version = client.get_model_version(name, str(version))
    attestation = read_evidence(client, name, model_version).attestation
    location = client.get_model_version_download_uri(name, str(version)).rstrip("/")
    # The weights are loaded into memory (AbstractinatorPyfunc.load_checkpoint keeps no file open and reads none
    # later), so the downloaded copy goes with the folder: every champion scored used to leave one in /tmp.
    with tempfile.TemporaryDirectory(prefix="abstractinator-model-") as folder:
        weights = Path(
            download_artifacts(
                f"{location}/artifacts/{WEIGHTS_FILE}", dst_path=folder, tracking_uri=client.tracking_uri
            )
        )
        if sha256_of(weights) != attestation.challenger_weights_sha256:  # checked again: loaded is what was read
            raise EvidenceError(
                f"v{version}: its registered weights are not the weights its evaluation scored (sha256)"
            )
        return VerifiedModel(weights)


class ServingRefused(UserError):
    """`registry serve` will not serve the version (weights a rollback banned, or not made champion by the gate
    without `--allow-ungated`); str() is one line."""


def serving_decision(client, name: str, version: str, allow_ungated: bool = False) -> str:
    """What the gate decided about the version, as one line to show before it is served. ServingRefused when its
    weights (as its signed attestation names them) are ones a rollback demoted (decision_log.rolled_back_weights:
    never served, whatever the flags), or when the gate did not make it champion (refused, pending, never gated)
    and `allow_ungated` is off. EvidenceError when its attestation does not verify."""
    from components.registry.decision_log import latest_decision, rolled_back_weights

    label = f"v{version} of {name}"
    weights = attestation_of(client, client.get_model_version(name, str(version))).challenger_weights_sha256
    if weights in rolled_back_weights(client, name):
        raise ServingRefused(f"{label}: its weights ({weights[:12]}) were rolled back from champion: not served")
    decision = latest_decision(client, name, str(version))
    said = f"gate decision: {decision.describe()}" if decision else "never gated"
    if decision is not None and decision.made_champion:
        return f"{label}: {said}"
    if not allow_ungated:
        raise ServingRefused(f"{label}: the gate did not promote it ({said}); --allow-ungated serves it anyway")
    return f"{label}: {said}; served anyway (--allow-ungated): the gate did not promote it"


def verified_serving_folder(client, name: str, version: str, folder: Path) -> Path:
    """A pyfunc model folder under `folder` (which the caller keeps private) holding only what the version's signed
    attestation vouches for: the registered model is downloaded once into `folder`, its weights and every code file
    checked there against the attestation (no unattested code file may be present), and a new model is written
    from those checked files alone (`folder/model`; its MLflow metadata written here, never the registered
    `MLmodel`, which no attestation covers and anyone with the credential can rewrite to run other code or load
    other weights). The new folder is checked again. What is served is the local copy that was checked, so
    nothing changed in the artifact store afterwards reaches it. EvidenceError (one line) when anything differs."""
    from components.registry.attestation import WEIGHTS_FILE as WEIGHTS
    from components.registry.pyfunc_model import CODE_PACKAGES, save_pyfunc_model

    model_version = client.get_model_version(name, str(version))
    attestation = attestation_of(client, model_version)  # the signature, with the evaluation's public key
    label = f"v{model_version.version}"
    if attestation.model_name != name:
        raise EvidenceError(f"{label}: its attestation is for model {attestation.model_name!r}, not {name!r}")
    registered = download_registered_model(client, name, str(version), Path(folder) / "registered")
    problem = local_model_problem(registered, attestation)
    if not problem and not attestation.model_files:
        problem = "its attestation names no model code files to check"
    if problem:
        raise EvidenceError(f"{label}: {problem}")
    served = save_pyfunc_model(
        registered / "artifacts" / WEIGHTS,
        registered / "pyfunc_model.py",
        [str(registered / "code" / package) for package in CODE_PACKAGES],
        Path(folder) / "model",
    )
    problem = local_model_problem(served, attestation)
    if problem:  # what MLflow wrote must still be exactly the attested files
        raise EvidenceError(f"{label}: the model folder written for serving differs: {problem}")
    return served
