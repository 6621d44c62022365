"""Real servers for integration tests, on loopback and free ports, stopped by the tests that start them.

- PostgreSQL: a private data dir and socket dir, trust auth on 127.0.0.1 only (a throwaway test cluster).
- MLflow tracking server: PostgreSQL (or sqlite) backend, artifacts proxied to a folder or S3.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout_s: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before it was ready")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{what} was not ready within {timeout_s} s")


def _postgres_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    found = candidates[0] if candidates else shutil.which(name)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<port>."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="abstractinator-pg-"))
        self.port = free_port()
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else list(args)
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        self._run(_postgres_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "start")
        return self

    def create_database(self, name: str) -> str:
        self._run(_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on 127.0.0.1:<port>; stop() and start() again keep its port and stores."""

    def __init__(self, backend_uri: str, artifacts_destination: str, env: dict[str, str] | None = None):
        self.backend_uri = backend_uri
        self.artifacts_destination = artifacts_destination
        self.port = free_port()
        self.env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.log = Path(tempfile.mkdtemp(prefix="abstractinator-mlflow-")) / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
            return response.status == 200

    def start(self, timeout_s: float = 90) -> MlflowServer:
        mlflow = str(Path(sys.executable).parent / "mlflow")
        command = [
            mlflow, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", self.backend_uri, "--artifacts-destination", self.artifacts_destination,
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        try:
            wait_for(self._healthy, timeout_s, f"MLflow server (log: {self.log})", self.process)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
