"""The full local stack (`make up` / `make down`): SeaweedFS with keys enforced, PostgreSQL, MLflow with
artifacts proxied to S3; stopped cleanly, restarted with its data kept. It lets no one in: every port its
processes listen on refuses a client without credentials (tests/port_probes.py), PostgreSQL wants the password,
and user `nobody` can read none of its files."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import boto3
import psycopg2
import pytest
from botocore.exceptions import ClientError

from abstractinator.cli import main
from devtools.local_stack import MLFLOW_ADMIN, LocalStack, StackError
from tests.port_probes import answers_without_credentials

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def port_open(url: str) -> bool:
    parsed = urllib.parse.urlparse(url)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parsed.hostname, parsed.port)) == 0


@pytest.fixture
def state_dir():
    """Under /tmp itself: as root, PostgreSQL runs as the postgres user, who cannot enter pytest's 0700 dirs."""
    root = Path(tempfile.mkdtemp(prefix="abstractinator-stack-test-"))
    root.chmod(0o755)
    yield root / "stack"
    shutil.rmtree(root, ignore_errors=True)


def listening_ports(state: dict) -> dict[int, str]:
    """Every TCP port the stack's processes (and their children) listen on, with the process's name."""
    import psutil

    postmaster = Path(state["postgres"]["root"]) / "data" / "postmaster.pid"
    leaders = [state["s3"]["pid"], state["mlflow"]["pid"], int(postmaster.read_text().split()[0])]
    ports = {}
    for leader in map(psutil.Process, leaders):
        for process in [leader, *leader.children(recursive=True)]:
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    ports[connection.laddr.port] = process.name()
    return ports


def readable_by_nobody(folder: Path) -> list[str]:
    """The files under `folder` that user `nobody` can open (it lists what it can reach, reads what it finds)."""
    script = (
        "import os,sys\n"
        "for root, folders, files in os.walk(sys.argv[1]):\n"
        "    for name in files:\n"
        "        try:\n"
        "            open(os.path.join(root, name), 'rb').close(); print(os.path.join(root, name))\n"
        "        except OSError: pass\n"
    )
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", "python3", "-c", script, str(folder)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_stack_up_use_down_up_again(state_dir: Path, capsys, monkeypatch) -> None:
    assert main(["stack", "up", "--state-dir", str(state_dir)]) == 0
    try:
        printed = capsys.readouterr().out
        stack = LocalStack(state_dir)
        state = stack.running()
        keys = json.loads((state_dir / "credentials").read_text())
        assert keys["secret_key"] not in printed  # keys are never printed
        ports = listening_ports(state)
        assert len(ports) >= 10, ports  # S3, filer, master, volume, admin (HTTP and gRPC), PostgreSQL, MLflow
        answered = {port: how for port in ports if (how := answers_without_credentials(port))}
        assert answered == {}, {f"{ports[port]}:{port}": how for port, how in answered.items()}
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host="127.0.0.1", port=state["postgres"]["port"], user="postgres", dbname="mlflow")
        if os.geteuid() == 0:
            assert readable_by_nobody(state_dir) == []
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_ADMIN)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", keys["mlflow_password"])
        assert (state_dir / "credentials").stat().st_mode & 0o077 == 0
        endpoint = state["s3"]["endpoint_url"]
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=keys["access_key"],
            aws_secret_access_key=keys["secret_key"],
        )
        s3.put_object(Bucket="abstractinator", Key="probe.txt", Body=b"hello")
        stranger = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="nobody",
            aws_secret_access_key="wrong",
        )
        with pytest.raises(ClientError):
            stranger.get_object(Bucket="abstractinator", Key="probe.txt")
        with pytest.raises(StackError, match="already up"):
            stack.start()

        from mlflow import MlflowClient

        client = MlflowClient(state["mlflow"]["uri"])
        experiment_id = client.create_experiment("stack-probe")
        run = client.create_run(experiment_id)
        client.log_text(run.info.run_id, "artifact through the server", "note.txt")
        keys_in_bucket = [o["Key"] for o in s3.list_objects_v2(Bucket="abstractinator").get("Contents", [])]
        assert any(key.startswith("mlflow-artifacts/") and key.endswith("note.txt") for key in keys_in_bucket)

        assert main(["stack", "down", "--state-dir", str(state_dir)]) == 0
        assert not port_open(endpoint) and not port_open(state["mlflow"]["uri"])
        assert main(["stack", "down", "--state-dir", str(state_dir)]) == 0
        assert "not running" in capsys.readouterr().out

        state = stack.start()  # data kept: the experiment and the object survive a restart
        assert MlflowClient(state["mlflow"]["uri"]).get_experiment_by_name("stack-probe") is not None
        s3 = boto3.client(
            "s3",
            endpoint_url=state["s3"]["endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id=keys["access_key"],
            aws_secret_access_key=keys["secret_key"],
        )
        assert s3.get_object(Bucket="abstractinator", Key="probe.txt")["Body"].read() == b"hello"
    finally:
        LocalStack(state_dir).stop()
