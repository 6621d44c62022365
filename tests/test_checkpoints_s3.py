"""The checkpoint store on a real S3 server (SeaweedFS on loopback): upload, pointer, pruning, loading."""

from __future__ import annotations

import pytest
import torch

from components.infrastructure.storage import fetch_file, list_objects, publish_file
from components.training.checkpoints import CheckpointStore, load_checkpoint
from tests.servers import SeaweedS3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def s3():
    server = SeaweedS3Server("ckpt-access-key", "ckpt-secret-key-0123456789", ["ckpts"]).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch, settings_env):
    for name, value in s3.client_env.items():
        monkeypatch.setenv(name, value)
    settings_env(ABSTRACTINATOR_S3_ENDPOINT_URL=s3.endpoint_url)


def test_s3_store_keeps_the_last_n_and_loads_the_latest(s3_env) -> None:
    store = CheckpointStore("s3://ckpts/run-1", keep_last=2)
    for step in (5, 10, 15):
        store.save({"global_step": step, "model_state": {"w": torch.full((2,), float(step))}}, step)
    assert store.names() == ["checkpoint_step10.pt", "checkpoint_step15.pt"]
    assert store.latest() == "s3://ckpts/run-1/checkpoint_step15.pt"
    assert sorted(o.key for o in list_objects("ckpts", "run-1/")) == [
        "run-1/checkpoint_step10.pt",
        "run-1/checkpoint_step15.pt",
        "run-1/latest",
    ]
    loaded = load_checkpoint("s3://ckpts/run-1")  # a prefix means its latest checkpoint
    assert loaded["global_step"] == 15 and torch.equal(loaded["model_state"]["w"], torch.full((2,), 15.0))


def test_publish_and_fetch_round_trip_a_file(s3_env, tmp_path) -> None:
    source = tmp_path / "base.pt"
    source.write_bytes(b"\x00base components\xff")
    uri = publish_file(source, "s3://ckpts/bases/base.pt")
    assert fetch_file(uri, tmp_path / "copy" / "base.pt").read_bytes() == source.read_bytes()
    assert fetch_file(str(source), tmp_path / "unused") == source  # a local URI is used as it is
