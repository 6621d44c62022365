"""Checkpoints: atomic writes, last-N pruning, the latest pointer, and clear errors for bad files."""

from pathlib import Path

import pytest
import torch

from components.training.checkpoints import (
    CheckpointError,
    CheckpointStore,
    atomic_torch_save,
    load_checkpoint,
    read_checkpoint_file,
)


def state(step: int) -> dict:
    return {"global_step": step, "model_state": {"w": torch.full((3,), float(step))}, "exp_config": {"a": 1}}


def test_save_prunes_to_the_last_n_and_points_latest_at_the_newest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt", keep_last=2)
    for step in (10, 20, 30):
        store.save(state(step), step)
    assert store.names() == ["checkpoint_step20.pt", "checkpoint_step30.pt"]
    assert store.latest() == str(tmp_path / "ckpt" / "checkpoint_step30.pt")
    loaded = load_checkpoint(tmp_path / "ckpt")  # a folder means its latest checkpoint
    assert loaded["global_step"] == 30 and torch.equal(loaded["model_state"]["w"], torch.full((3,), 30.0))
    assert not list((tmp_path / "ckpt").glob(".*"))  # no temp files left behind


def test_latest_falls_back_to_the_newest_file_when_the_pointer_is_stale(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_last=3)
    store.save(state(5), 5)
    (tmp_path / "latest").write_text("checkpoint_step999.pt\n")
    assert store.latest() == str(tmp_path / "checkpoint_step5.pt")
    assert CheckpointStore(tmp_path / "empty").latest() is None


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_step1.pt"
    atomic_torch_save({"format": "x", "value": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"value": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_step1.pt"]


def test_truncated_foreign_and_missing_files_are_named(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    good = Path(store.save(state(1), 1))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable checkpoint"):
        read_checkpoint_file(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not an Abstractinator checkpoint"):
        read_checkpoint_file(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: holds no checkpoint"):
        load_checkpoint(tmp_path / "empty")


def test_pickled_objects_are_refused_by_weights_only_loading(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "abstractinator-checkpoint", "payload": Path("/etc/passwd")}, path)
    with pytest.raises(CheckpointError, match="evil.pt: not a readable checkpoint"):
        read_checkpoint_file(path)
