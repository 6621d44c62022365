"""The evaluation's attestation: what one evaluation measured, bound to the exact weights it scored, signed with the
evaluation's key (components/infrastructure/signing.py). The gate and the skip-retrain check read nothing else.

It names the sha256 of the challenger's weights file (the slim checkpoint that gets registered, `model.pt`) and of
the champion's (taken from its registered artifact, checked against the champion's own attestation), the data
hash and the golden set's hash (the bytes both were scored on), the code identity and config hash the challenger
was made with, the challenger's metrics, the paired result (components/registry/paired_interval.py) or why the
champion could not be scored, and the sha256 of the per-block bits file and of the report.

Stored as two artifacts beside the report (`evaluation/attestation.json`: canonical JSON, exactly the bytes
signed; `evaluation/attestation.sig`: the base64 Ed25519 signature) in the evaluation run and in the candidate
run whose model is registered. Nothing else in MLflow (tags, params, metrics appended later) feeds a decision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from components.infrastructure import signing
from components.infrastructure.atomic_files import write_bytes_atomic, write_text_atomic
from components.registry.paired_interval import PairedResult

ATTESTATION_FILE = "attestation.json"
SIGNATURE_FILE = "attestation.sig"
PAIRED_BITS_FILE = "paired_bits.json"
WEIGHTS_FILE = "model.pt"  # the slim checkpoint: what the evaluation scored and the pyfunc model carries


class ScoredChampion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    weights_sha256: str


class Attestation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    model_name: str = Field(description="The registered model whose champion was scored beside the challenger.")
    challenger_weights_sha256: str
    champion: ScoredChampion | None = Field(None, description="The champion scored on the same bytes (None: none).")
    champion_problem: str = Field("", description="Why the champion could not be scored (the challenger is refused).")
    data_hash: str
    golden_sha256: str = Field(description="sha256 over the golden texts scored (name and content of each).")
    code_identity: str
    config_hash: str
    metrics: dict[str, float] = Field(description="The challenger's own evaluation metrics (the absolute checks).")
    paired: PairedResult | None = None
    paired_bits_sha256: str = ""
    model_files: dict[str, str] = Field(
        default_factory=dict,
        description="{path in the registered model: sha256} of its code (pyfunc_model.py, code/**) as evaluated.",
    )
    report_sha256: str
    evaluated_at: str

    def canonical(self) -> bytes:
        """The signed bytes: sorted keys, no spaces (NaN and infinities as Python's json writes them)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


def write_signed(attestation: Attestation, folder: Path) -> tuple[Path, Path]:
    """attestation.json (the canonical bytes) and attestation.sig (signed with the evaluation's key) in `folder`."""
    data = attestation.canonical()
    signature = signing.sign(data)
    return (
        write_bytes_atomic(Path(folder) / ATTESTATION_FILE, data),
        write_text_atomic(Path(folder) / SIGNATURE_FILE, signature + "\n"),
    )


def verified(data: bytes, signature: str) -> Attestation:
    """The attestation in `data` when `signature` is the evaluation key's over exactly these bytes; SigningError
    (one line) otherwise, ValueError when signed bytes do not parse (a key misused to sign something else)."""
    signing.verify(data, signature.strip())
    return Attestation.model_validate_json(data)


def read_verified(folder: Path) -> Attestation:
    folder = Path(folder)
    return verified((folder / ATTESTATION_FILE).read_bytes(), (folder / SIGNATURE_FILE).read_text())
