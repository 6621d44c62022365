"""Connecting to a Kubeflow Pipelines API server: the bearer token, a reachability check, and one-line errors.

The token (a Kubeflow/Dex session token, or a service-account token projected into a pod at
/var/run/secrets/kubeflow/pipelines/token) comes from `--token-file`, else ABSTRACTINATOR_KFP_TOKEN, else the file
named by ABSTRACTINATOR_KFP_TOKEN_FILE; with none, requests go without Authorization (a port-forwarded,
single-user KFP). The token is never printed or logged.

Every failure a user can fix (unreachable host, refused token, an API error) becomes a ClusterError whose message
is one line; `api_errors` turns kfp_server_api and urllib3 exceptions into those.
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from configs.errors import UserError

HEALTHZ_PATH = "/apis/v2beta1/healthz"
PROBE_TIMEOUT_S = 10.0


class ClusterError(UserError):
    """A submission or scheduling problem the user can fix; the message is the whole story."""


class KfpAuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ABSTRACTINATOR_KFP_", extra="ignore")

    token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("ABSTRACTINATOR_KFP_TOKEN"))
    token_file: Path | None = Field(default=None, validation_alias=AliasChoices("ABSTRACTINATOR_KFP_TOKEN_FILE"))


def read_token(token_file: Path | None = None) -> str | None:
    """The bearer token: --token-file, else ABSTRACTINATOR_KFP_TOKEN, else ABSTRACTINATOR_KFP_TOKEN_FILE, else None."""
    settings = KfpAuthSettings()
    if token_file is None and settings.token is not None:
        return settings.token.get_secret_value().strip() or None
    path = token_file or settings.token_file
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as error:
        raise ClusterError(f"cannot read the token file {path}: {error.strerror or error}") from error
    if not token:
        raise ClusterError(f"the token file {path} is empty")
    return token


def _error_message(body: str | bytes | None) -> str:
    """The server's own message from a JSON error body (grpc-gateway's `message`), else the body's first line."""
    if not body:
        return ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            # grpc-gateway errors carry `message`; the upload endpoints `error_message` (pipeline_upload_server.go)
            text = str(parsed.get("message") or parsed.get("error_message") or parsed.get("error") or text)
    except json.JSONDecodeError:
        pass
    return " ".join(text.split())[:300]


def probe(host: str, token: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> dict:
    """GET healthz with a short timeout, so a wrong host fails in seconds with one line (kfp.Client retries for
    about half a minute and then raises a TimeoutError without the reason)."""
    if not host.startswith(("http://", "https://")):
        raise ClusterError(f"host {host!r} must start with http:// or https:// (e.g. http://localhost:8888)")
    request = urllib.request.Request(host.rstrip("/") + HEALTHZ_PATH)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise ClusterError(
                f"Kubeflow Pipelines at {host} refused the request (HTTP {error.code}): pass a valid token "
                "with --token-file or ABSTRACTINATOR_KFP_TOKEN"
            ) from None
        raise ClusterError(
            f"{host} answered HTTP {error.code} on {HEALTHZ_PATH}: is it the Kubeflow Pipelines API "
            f"(e.g. kubectl port-forward -n kubeflow svc/ml-pipeline 8888)? {_error_message(error.read())}".rstrip()
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ClusterError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from None
    try:
        return json.loads(raw or b"{}")
    except json.JSONDecodeError:
        raise ClusterError(f"{host}{HEALTHZ_PATH} did not answer JSON: is it the Kubeflow Pipelines API?") from None


@contextlib.contextmanager
def api_errors(action: str) -> Iterator[None]:
    """Turn an API or transport failure during `action` into a one-line ClusterError."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as error:
        detail = _error_message(error.body) or error.reason or ""
        raise ClusterError(f"{action}: HTTP {error.status} {detail}".rstrip()) from None
    except urllib3.exceptions.HTTPError as error:
        raise ClusterError(f"{action}: cannot reach the server ({error.__class__.__name__}: {error})") from None


def connect(host: str, namespace: str | None = None, token: str | None = None):
    """A kfp.Client for `host` after a healthz probe. kfp's own console output goes to stderr, so stdout carries
    only what our commands print."""
    from kfp import Client

    probe(host, token)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), api_errors(f"connecting to {host}"):
        warnings.simplefilter("ignore", FutureWarning)  # "only works with Kubeflow Pipeline v2.0.0-beta.2 and later"
        return Client(host=host.rstrip("/"), namespace=namespace or "kubeflow", existing_token=token)
