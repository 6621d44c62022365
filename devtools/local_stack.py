"""The full local stack on loopback: SeaweedFS (S3), PostgreSQL and an MLflow server (PostgreSQL backend,
artifacts proxied to S3). Used by `make up` / `make down` (`abstractinator stack up|down|status`) and by the
integration tests, which start the same classes on free ports and stop them afterwards.

- PostgreSQL: a private data dir and socket dir, trust auth on 127.0.0.1 only (a throwaway local cluster).
- SeaweedFS: `weed mini` with every port pinned to loopback, keys enforced (AWS_* variables), buckets made.
- MLflow: `mlflow server --workers 1` with job execution off (one process instead of thirteen).

`LocalStack` starts all three detached, writes their ports, pids and the environment a client needs to
`<state_dir>/stack.json` and `<state_dir>/env` (source it; the CLI's state dir is .data/stack); `stop` reads
those back. The S3 keys of the local stack are generated once, written to `<state_dir>/credentials` (mode 600)
and never printed.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from configs.errors import UserError


class StackError(UserError):
    """The local stack cannot start or stop; str() is one line."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (held open together while choosing, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for(check, timeout_s: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"{what} exited with status {process.returncode} before it was ready")
        try:
            if check():
                return
        except Exception:  # not up yet: connection refused, 5xx, bucket not made yet ...
            pass
        time.sleep(0.25)
    raise StackError(f"{what} was not ready within {timeout_s} s")


def _stop_group(pid: int, timeout_s: float = 20) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL if it lingers."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _postgres_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    found = candidates[0] if candidates else shutil.which(name)
    if not found:
        raise StackError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


class PostgresError(UserError):
    """A PostgreSQL command failed; str() is its last line of output."""


class PostgresServer:
    """A PostgreSQL cluster on 127.0.0.1:<port>; `root` None: a throwaway temp dir removed on stop."""

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        self.keep = root is not None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="abstractinator-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            closed = [p for p in self.root.parents if p.stat().st_mode & 0o001 == 0]
            if closed:  # the postgres user must be able to reach its data dir
                raise PostgresError(
                    f"{self.root}: {closed[0]} is not searchable by the postgres user "
                    f"(chmod o+x it, or choose a state dir elsewhere)"
                )

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else list(args)
        try:
            return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
        except subprocess.CalledProcessError as error:
            detail = (error.stderr or error.stdout or "").strip().splitlines()
            raise PostgresError(f"{Path(args[0]).name} failed: {detail[-1] if detail else error}") from None

    def start(self) -> PostgresServer:
        if not (self.data / "PG_VERSION").is_file():
            self._run(_postgres_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "start"
        )
        return self

    def create_database(self, name: str) -> str:
        """`name` (created unless it exists) as an SQLAlchemy URI."""
        listed = self._run(
            _postgres_bin("psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname='{name}'",
        ).stdout.strip()
        if listed != "1":
            self._run(_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        except (PostgresError, subprocess.TimeoutExpired):
            pass
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


class SeaweedS3Server:
    """`weed mini` serving S3 on 127.0.0.1:<port>, keys enforced, `buckets` created at start."""

    PORT_FLAGS = (
        "s3.port",
        "s3.port.grpc",
        "s3.port.iceberg",
        "s3.port.lance",
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "webdav.port",
        "admin.port",
        "admin.port.grpc",
    )

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        buckets: list[str],
        root: Path | None = None,
        ports: dict[str, int] | None = None,
    ) -> None:
        self.keep = root is not None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="abstractinator-s3-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.access_key, self.secret_key, self.buckets = access_key, secret_key, buckets
        self.ports = ports or dict(zip(self.PORT_FLAGS, free_ports(len(self.PORT_FLAGS)), strict=True))
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def client_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _ready(self) -> bool:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )
        names = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        return set(self.buckets) <= names

    def start(self, timeout_s: float = 60) -> SeaweedS3Server:
        weed = Path(sys.executable).parent / "weed"
        command = [
            str(weed if weed.exists() else "weed"),
            "mini",
            f"-dir={self.root}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={','.join(self.buckets)}",
            "-admin.ui=false",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        with (self.root / "weed.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root, start_new_session=True
            )
        self.pid = self.process.pid
        try:
            wait_for(self._ready, timeout_s, f"SeaweedFS (log: {self.root / 'weed.log'})", self.process)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.pid is not None:
            _stop_group(self.pid)
            if self.process is not None:
                self.process.poll()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on 127.0.0.1:<port>; stop() and start() again keep its port and stores."""

    def __init__(
        self,
        backend_uri: str,
        artifacts_destination: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        log_dir: Path | None = None,
    ):
        self.backend_uri = backend_uri
        self.artifacts_destination = artifacts_destination
        self.port = port or free_port()
        self.env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None
        log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="abstractinator-mlflow-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
            return response.status == 200

    def start(self, timeout_s: float = 90) -> MlflowServer:
        mlflow = str(Path(sys.executable).parent / "mlflow")
        command = [
            mlflow,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            self.artifacts_destination,
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.pid = self.process.pid
        try:
            wait_for(self._healthy, timeout_s, f"MLflow server (log: {self.log})", self.process)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.pid is None:
            return
        if self.process is not None and self.process.poll() is not None:
            return
        _stop_group(self.pid)
        if self.process is not None:
            self.process.poll()


class LocalStack:
    """SeaweedFS + PostgreSQL + MLflow under `state_dir`, detached, for `make up` / `make down`."""

    BUCKET = "abstractinator"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state_file = self.state_dir / "stack.json"

    def _credentials(self) -> tuple[str, str]:
        path = self.state_dir / "credentials"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"access_key": secrets.token_hex(8), "secret_key": secrets.token_hex(20)}))
            path.chmod(0o600)
        data = json.loads(path.read_text())
        return data["access_key"], data["secret_key"]

    def running(self) -> dict | None:
        if not self.state_file.is_file():
            return None
        return json.loads(self.state_file.read_text())

    def start(self) -> dict:
        if self.running():
            raise StackError(f"the local stack is already up ({self.state_file}); `make down` first")
        access_key, secret_key = self._credentials()
        s3 = SeaweedS3Server(access_key, secret_key, [self.BUCKET], root=self.state_dir / "seaweedfs").start()
        postgres = mlflow = None
        try:
            postgres = PostgresServer(root=self.state_dir / "postgres").start()
            backend = postgres.create_database("mlflow")
            mlflow = MlflowServer(
                backend, f"s3://{self.BUCKET}/mlflow-artifacts", env=s3.client_env, log_dir=self.state_dir / "mlflow"
            ).start()
        except Exception:
            for server in (mlflow, postgres, s3):
                if server is not None:
                    server.stop()
            raise
        state = {
            "s3": {"pid": s3.pid, "endpoint_url": s3.endpoint_url, "bucket": self.BUCKET},
            "postgres": {"port": postgres.port, "root": str(postgres.root)},
            "mlflow": {"pid": mlflow.pid, "uri": mlflow.uri, "log": str(mlflow.log)},
        }
        self.state_file.write_text(json.dumps(state, indent=2))
        (self.state_dir / "env").write_text(
            f"# source this file: the local stack's endpoints (keys are in {self.state_dir / 'credentials'})\n"
            f"export MLFLOW_TRACKING_URI={mlflow.uri}\n"
            f"export AWS_ENDPOINT_URL_S3={s3.endpoint_url}\n"
            "export AWS_DEFAULT_REGION=us-east-1\n"
            f"export AWS_ACCESS_KEY_ID=$(python3 -c \"import json;print(json.load(open('{self.state_dir}/credentials'))"
            "['access_key'])\")\n"
            f"export AWS_SECRET_ACCESS_KEY=$(python3 -c \"import json;print(json.load(open('{self.state_dir}/"
            "credentials'))['secret_key'])\")\n"
            f"export ABSTRACTINATOR_ARTIFACT_ROOT=s3://{self.BUCKET}/pipeline\n"
        )
        return state

    def stop(self) -> bool:
        """Stop what `start` started; False when nothing was running."""
        state = self.running()
        if state is None:
            return False
        _stop_group(int(state["mlflow"]["pid"]))
        PostgresServer(root=Path(state["postgres"]["root"]), port=int(state["postgres"]["port"])).stop()
        _stop_group(int(state["s3"]["pid"]))
        self.state_file.unlink()
        return True
