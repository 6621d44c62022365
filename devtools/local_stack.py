"""The full local stack on loopback: SeaweedFS (S3), PostgreSQL and an MLflow server (PostgreSQL backend,
artifacts proxied to S3). Used by `make up` / `make down` (`abstractinator stack up|down|status`) and by the
integration tests, which start the same classes on free ports and stop them afterwards.

- PostgreSQL: a private data dir and socket dir on 127.0.0.1, scram-sha-256 password auth for every connection
  (local socket included) with a generated password; a cluster made earlier with trust auth is moved over to it.
  Clients get the password in their environment (PGPASSWORD) or URI, never in a command line.
- SeaweedFS: `weed mini` with every port pinned to loopback, keys enforced (AWS_* variables), buckets made, and
  every other port locked by its `security.toml` (devtools/seaweed_security.py: JWT, mutual TLS, client
  certificates); WebDAV, Iceberg and Lance off; its unix sockets in its own folder.
- MLflow: `mlflow server --workers 1` with job execution off (one process instead of thirteen); in the stack, its
  basic-auth app with a generated admin password (no permission for anyone else).

`LocalStack` starts all three detached, writes their ports, pids and the environment a client needs to
`<state_dir>/stack.json` and `<state_dir>/env` (source it; the CLI's state dir is .data/stack); `stop` reads
those back. The S3 keys and the PostgreSQL password of the local stack are generated once, written to
`<state_dir>/credentials` and never printed. Every file of the stack is its owner's only: files 0600, folders 0700
(the state dir itself 0711 when root runs it, so that the postgres user can reach its own data folder).
"""

from __future__ import annotations

import glob
import hashlib
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
import urllib.parse
import urllib.request
from pathlib import Path

from configs.errors import UserError


class StackError(UserError):
    """The local stack cannot start or stop; str() is one line."""


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by its owner only from the first byte (an existing file's
    mode is set too)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def private_folder(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


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
    """A PostgreSQL cluster on 127.0.0.1:<port> whose superuser `postgres` has `password` (generated when not
    given) and scram-sha-256 auth; `root` None: a throwaway temp dir removed on stop."""

    def __init__(self, root: Path | None = None, port: int | None = None, password: str | None = None) -> None:
        self.keep = root is not None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="abstractinator-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self.port = port or free_port()
        self.password = password or secrets.token_urlsafe(24)
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
        env = {**os.environ, "PGPASSWORD": self.password}  # libpq reads it; a command line would show it to all
        try:
            return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120, env=env)
        except subprocess.CalledProcessError as error:
            detail = (error.stderr or error.stdout or "").strip().splitlines()
            raise PostgresError(f"{Path(args[0]).name} failed: {detail[-1] if detail else error}") from None

    def _initdb(self) -> None:
        password_file = self.root / ".initdb-password"
        descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(self.password + "\n")
        if self._as_postgres:
            shutil.chown(password_file, "postgres", "postgres")
        try:
            self._run(
                _postgres_bin("initdb"),
                "-D",
                str(self.data),
                "-A",
                "scram-sha-256",
                "-U",
                "postgres",
                f"--pwfile={password_file}",
                "--no-sync",
            )
        finally:
            password_file.unlink(missing_ok=True)

    def _require_passwords(self) -> None:
        """A cluster initialised with trust auth (before passwords): set the password, then scram everywhere."""
        rules = self.data / "pg_hba.conf"
        lines = rules.read_text().splitlines()
        if not any(line.split()[-1:] == ["trust"] for line in lines if not line.lstrip().startswith("#")):
            return
        escaped = self.password.replace("'", "''")
        self._psql("postgres", f"ALTER USER postgres PASSWORD '{escaped}'")
        rewritten = [
            line[: line.rindex("trust")] + "scram-sha-256"
            if not line.lstrip().startswith("#") and line.split()[-1:] == ["trust"]
            else line
            for line in lines
        ]
        rules.write_text("\n".join(rewritten) + "\n")
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "reload")

    def start(self) -> PostgresServer:
        if not (self.data / "PG_VERSION").is_file():
            self._initdb()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "start"
        )
        self._require_passwords()
        return self

    def _psql(self, database: str, sql: str) -> str:
        return self._run(
            _postgres_bin("psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-tAc",
            sql,
        ).stdout.strip()

    def create_database(self, name: str) -> str:
        """`name` (created unless it exists) as an SQLAlchemy URI, with the password (keep it out of argv)."""
        if self._psql("postgres", f"SELECT 1 FROM pg_database WHERE datname='{name}'") != "1":
            self._run(_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        password = urllib.parse.quote(self.password, safe="")
        return f"postgresql+psycopg2://postgres:{password}@127.0.0.1:{self.port}/{name}"

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
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
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
        self.root = private_folder(Path(root) if root else Path(tempfile.mkdtemp(prefix="abstractinator-s3-")))
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
        from devtools.seaweed_security import write_security_config

        write_security_config(self.root, write_private)  # read from the working folder by every server
        weed = Path(sys.executable).parent / "weed"
        command = [
            str(weed if weed.exists() else "weed"),
            "mini",
            f"-dir={self.root}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={','.join(self.buckets)}",
            "-admin.ui=false",
            "-webdav=false",  # WebDAV has no credentials of its own: off
            f"-filer.localSocket={self.root / 'filer.sock'}",  # not /tmp/seaweedfs-filer-<port>.sock, open to all
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-s3.port.iceberg=0",  # the Iceberg and Lance catalogs: off (0 disables, `weed mini -h`)
            "-s3.port.lance=0",
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


MLFLOW_ADMIN = "admin"


class MlflowServer:
    """`mlflow server` on 127.0.0.1:<port>; stop() and start() again keep its port and stores."""

    def __init__(
        self,
        backend_uri: str,
        artifacts_destination: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        log_dir: Path | None = None,
        admin_password: str | None = None,
    ):
        """admin_password: MLflow's basic-auth app in front of every API route (user `admin`; unknown users
        get no permission; /health stays open, mlflow/server/auth `_UNPROTECTED_PATH_PREFIXES`)."""
        self.backend_uri = backend_uri
        self.admin_password = admin_password
        self.artifacts_destination = artifacts_destination
        self.port = port or free_port()
        self.env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None
        log_dir = private_folder(Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="abstractinator-mlflow-")))
        self.log = log_dir / "server.log"
        self.auth_config = log_dir / "basic_auth.ini"

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
            "--artifacts-destination",
            self.artifacts_destination,
        ]
        # The backend URI holds the database password: passed in the environment (mlflow server's
        # --backend-store-uri reads MLFLOW_BACKEND_STORE_URI, mlflow/cli), which only its owner can read.
        env = {**self.env, "MLFLOW_BACKEND_STORE_URI": self.backend_uri}
        if self.admin_password is not None:
            # mlflow/server/auth/basic_auth.ini's keys; the admin password from the environment
            # (MLFLOW_AUTH_ADMIN_PASSWORD, read when the user store is first made).
            write_private(
                self.auth_config,
                "[mlflow]\n"
                "default_permission = NO_PERMISSIONS\n"
                f"database_uri = sqlite:///{self.auth_config.parent / 'basic_auth.db'}\n"
                f"admin_username = {MLFLOW_ADMIN}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
            )
            env |= {
                "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_config),
                "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
                # the auth app's CSRF protection needs a static key (mlflow/server/auth get_flask_server_secret_key)
                "MLFLOW_FLASK_SERVER_SECRET_KEY": hashlib.sha256(f"csrf:{self.admin_password}".encode()).hexdigest(),
            }
            command += ["--app-name", "basic-auth"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
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

    def _credentials(self) -> dict[str, str]:
        """The stack's S3 keys and PostgreSQL password, made once (a password is added to older files)."""
        # The postgres user must reach its data folder under the state dir: search (not read) for others as root.
        private_folder(self.state_dir, 0o711 if os.geteuid() == 0 else 0o700)
        path = self.state_dir / "credentials"
        data = json.loads(path.read_text()) if path.is_file() else {}
        made = {
            "access_key": secrets.token_hex(8),
            "secret_key": secrets.token_hex(20),
            "postgres_password": secrets.token_urlsafe(24),
            "mlflow_password": secrets.token_urlsafe(24),
        }
        if set(made) - set(data) or path.stat().st_mode & 0o077:
            write_private(path, json.dumps({**made, **data}))
        return json.loads(path.read_text())

    def running(self) -> dict | None:
        if not self.state_file.is_file():
            return None
        return json.loads(self.state_file.read_text())

    def start(self) -> dict:
        if self.running():
            raise StackError(f"the local stack is already up ({self.state_file}); `make down` first")
        keys = self._credentials()
        s3 = SeaweedS3Server(
            keys["access_key"], keys["secret_key"], [self.BUCKET], root=self.state_dir / "seaweedfs"
        ).start()
        postgres = mlflow = None
        try:
            postgres = PostgresServer(root=self.state_dir / "postgres", password=keys["postgres_password"]).start()
            backend = postgres.create_database("mlflow")
            mlflow = MlflowServer(
                backend,
                f"s3://{self.BUCKET}/mlflow-artifacts",
                env=s3.client_env,
                log_dir=self.state_dir / "mlflow",
                admin_password=keys["mlflow_password"],
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
        write_private(self.state_file, json.dumps(state, indent=2))
        write_private(
            self.state_dir / "env",
            f"# source this file: the local stack's endpoints (keys are in {self.state_dir / 'credentials'})\n"
            f"export MLFLOW_TRACKING_URI={mlflow.uri}\n"
            f"export AWS_ENDPOINT_URL_S3={s3.endpoint_url}\n"
            "export AWS_DEFAULT_REGION=us-east-1\n"
            f"export AWS_ACCESS_KEY_ID=$(python3 -c \"import json;print(json.load(open('{self.state_dir}/credentials'))"
            "['access_key'])\")\n"
            f"export AWS_SECRET_ACCESS_KEY=$(python3 -c \"import json;print(json.load(open('{self.state_dir}/"
            "credentials'))['secret_key'])\")\n"
            f"export MLFLOW_TRACKING_USERNAME={MLFLOW_ADMIN}\n"
            f"export MLFLOW_TRACKING_PASSWORD=$(python3 -c \"import json;print(json.load(open('{self.state_dir}/"
            "credentials'))['mlflow_password'])\")\n"
            f"export ABSTRACTINATOR_ARTIFACT_ROOT=s3://{self.BUCKET}/pipeline\n",
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
