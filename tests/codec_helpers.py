"""Shared helpers for the codec tests: a tiny model trained once per session (cached), checkpoints, and a
round trip through compress_file / decompress_file."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from components.codec.file_format import ModelIdentity, weights_sha256
from components.codec.files import CodecParams, compress_file, decompress_file
from components.training.checkpoints import CheckpointStore
from model import build_model
from model.tokenizer import BOS_ID
from tests.model_helpers import real_text, tiny_config, train

WINDOW = 64


def codec_config(**changes):
    values = dict(sequence_length=WINDOW, level_changes={"max_segment_len": 8, "min_segment_len": 1})
    values.update(changes)
    return tiny_config(**values)


@functools.cache
def _trained_state() -> tuple[dict, object]:
    """A tiny one-level model trained for 150 steps on tests/data/model_text.txt: its entropy varies, so
    boundaries come from the entropy rule and not only from max_segment_len."""
    config = codec_config()
    model = build_model(config)
    text = real_text()
    generator = torch.Generator().manual_seed(0)

    def batches(step: int):
        starts = torch.randint(0, len(text) - WINDOW, (8,), generator=generator).tolist()
        tokens = torch.tensor([[BOS_ID, *text[s : s + WINDOW - 1]] for s in starts])
        return tokens, torch.zeros_like(tokens, dtype=torch.bool)

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(model, batches, steps=150, lr=3e-3)
    finally:
        torch.set_num_threads(previous)
    return {k: v.clone() for k, v in model.state_dict().items()}, config


def trained_model():
    """A fresh copy of the cached trained model (eval mode), so a test may adapt it."""
    state, config = _trained_state()
    model = build_model(config)
    model.load_state_dict(state)
    return model.eval()


def save_checkpoint(model, folder: Path) -> str:
    """The model as a training checkpoint file that components/evaluation/model_loading.py reads."""
    return CheckpointStore(folder).save(
        {"model_state": model.state_dict(), "exp_config": model.exp_config.as_dict(), "global_step": 1}, 1
    )


def identity(model) -> ModelIdentity:
    return ModelIdentity(weights_sha256=weights_sha256(model))


def round_trip(model, data: bytes, tmp_path: Path, params: CodecParams | None = None, workers: int | None = None):
    """(restored bytes, compress summary, compressed path); `workers` processes code the stream groups at both
    ends (default: the cores torch sees, one under the torch_single_thread marker)."""
    params = params or CodecParams()
    source, packed, restored = tmp_path / "in.bin", tmp_path / "in.abz", tmp_path / "out.bin"
    source.write_bytes(data)
    summary = compress_file(model, identity(model), source, packed, params, workers=workers)
    decompress_file(model, packed, restored, workers=workers)
    return restored.read_bytes(), summary, packed
