"""The evaluation's signing key: Ed25519 (`cryptography`) signatures over the evaluation's attestation.

Who holds what:

- the private key only the evaluation task: on a cluster a Kubernetes Secret mounted as a file into the evaluate
  task alone (pipelines/training.py), named by ABSTRACTINATOR_EVAL_SIGNING_KEY_FILE; locally a key this module
  generates on first use under the data home (`keys/evaluation-ed25519.pem`, mode 0600, in a 0700 folder);
- the public key everyone who checks: ABSTRACTINATOR_EVAL_PUBLIC_KEY (the PEM text, a key of the settings
  ConfigMap on a cluster), else the local key's `keys/evaluation-ed25519.pub.pem`.

A cluster's pair is made once by `abstractinator registry keygen --out DIR` (generate_cluster_key): files only,
never the private key on a terminal, in a log or in argv (docs/cluster.md, step 3).

A signature is the base64 of Ed25519's 64 bytes over the exact bytes signed (the canonical JSON of the attestation).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from components.infrastructure.atomic_files import write_bytes_atomic
from components.infrastructure.settings import get_settings
from configs.errors import UserError

PRIVATE_KEY_ENV = "ABSTRACTINATOR_EVAL_SIGNING_KEY_FILE"
PUBLIC_KEY_ENV = "ABSTRACTINATOR_EVAL_PUBLIC_KEY"
KEY_FOLDER = "keys"
PRIVATE_KEY_NAME = "evaluation-ed25519.pem"
PUBLIC_KEY_NAME = "evaluation-ed25519.pub.pem"
PLACEHOLDER = "REPLACE_ME"  # what the settings ConfigMap holds until the operator puts the public key there
CLUSTER_PRIVATE_KEY_NAME = "ed25519.pem"  # the Secret abstractinator-eval-signing-key's key (pipelines/training.py)
CLUSTER_PUBLIC_KEY_NAME = "ed25519.pub.pem"


class SigningError(UserError):
    """No usable key, or a signature that does not verify; str() is one line."""


def local_key_paths() -> tuple[Path, Path]:
    folder = get_settings().data_home / KEY_FOLDER
    return folder / PRIVATE_KEY_NAME, folder / PUBLIC_KEY_NAME


def generate_local_key() -> Path:
    """A new key pair under the data home (the private key 0600 in a 0700 folder); returns the private key path.
    An existing key is kept: evidence already signed with it must stay verifiable."""
    private_path, public_path = local_key_paths()
    if private_path.is_file():
        return private_path
    private_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(private_path.parent, 0o700)  # the key is readable by its owner alone, also while it is written
    write_key_pair(private_path, public_path)
    return private_path


def write_key_pair(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair: the private key (PKCS#8 PEM) readable by its owner alone from the moment its file
    exists, the public key (SubjectPublicKeyInfo PEM) beside it. The private key is never printed or returned."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_bytes_atomic(private_path, pem, mode=0o600)
    os.chmod(private_path, 0o600)  # whatever the umask left
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_bytes_atomic(public_path, public)


def generate_cluster_key(folder: Path) -> tuple[Path, Path]:
    """A key pair for a cluster in `folder` (`registry keygen`): ed25519.pem, the evaluate task's Secret key, and
    ed25519.pub.pem, the settings ConfigMap's ABSTRACTINATOR_EVAL_PUBLIC_KEY. Refuses to overwrite either file:
    evidence signed with an existing key must stay verifiable, and a lost private key cannot be recovered."""
    private_path, public_path = folder / CLUSTER_PRIVATE_KEY_NAME, folder / CLUSTER_PUBLIC_KEY_NAME
    existing = [str(path) for path in (private_path, public_path) if path.exists()]
    if existing:
        named = ", ".join(existing)
        raise SigningError(f"{named} already exists: keygen never overwrites a key (choose another --out)")
    if folder.exists() and not folder.is_dir():
        raise SigningError(f"{folder} is not a folder")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_key_pair(private_path, public_path)
    return private_path, public_path


def _private_key():
    from cryptography.hazmat.primitives import serialization

    named = os.environ.get(PRIVATE_KEY_ENV, "").strip()
    path = Path(named) if named else generate_local_key()
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise SigningError(f"{path}: not a readable Ed25519 private key ({type(error).__name__})") from None


def public_key_pem() -> bytes:
    """The PEM of the evaluation's public key (see the module docstring); SigningError when there is none."""
    text = os.environ.get(PUBLIC_KEY_ENV, "").strip()
    if text.startswith(PLACEHOLDER):  # the manifests' value, never replaced (manifests/kfp/base/settings.yaml)
        raise SigningError(
            f"{PUBLIC_KEY_ENV} is still the manifests' placeholder: put the public key of `abstractinator registry "
            "keygen` there (docs/cluster.md, step 4)"
        )
    if text:
        return text.encode()
    _, public_path = local_key_paths()
    if not public_path.is_file():
        raise SigningError(f"no evaluation public key: set {PUBLIC_KEY_ENV} (or evaluate once locally to make one)")
    return public_path.read_bytes()


def sign(data: bytes) -> str:
    """The base64 Ed25519 signature of `data` with the evaluation's private key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = _private_key()
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"the evaluation signing key is a {type(key).__name__}, not Ed25519")
    return base64.b64encode(key.sign(data)).decode()


def verify(data: bytes, signature: str) -> None:
    """SigningError unless `signature` is the evaluation key's signature of `data`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(public_key_pem())
    except ValueError:
        raise SigningError(f"{PUBLIC_KEY_ENV}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError("the evaluation public key is not Ed25519")
    try:
        key.verify(base64.b64decode(signature, validate=True), data)
    except (InvalidSignature, ValueError):
        raise SigningError("signature does not verify with the evaluation's public key") from None
