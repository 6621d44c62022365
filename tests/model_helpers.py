"""Shared helpers for the model tests: tiny configs, batches of real text, a short training loop."""

from __future__ import annotations

from pathlib import Path

import torch

from configs import CompressorLevelConfig, ExpConfig, TopTransformerConfig
from model.tokenizer import BOS_ID, EOS_ID, PAD_ID

TEXT_PATH = Path(__file__).parent / "data" / "model_text.txt"


def tiny_level(**changes) -> CompressorLevelConfig:
    values = dict(
        dim=32,
        heads=2,
        window=8,
        num_shared_encoder_layers=1,
        num_lm_encoder_layers=1,
        num_compression_encoder_layers=1,
        encoder_ffn_dim_multiplier=2,
        num_queries=1,
        codebook_size=32,
        beta=0.25,
        vq_reset_interval=5,
        entropy_delta=0.2,
        min_segment_len=1,
        max_segment_len=6,
    )
    values.update(changes)
    return CompressorLevelConfig(**values)


def tiny_config(num_levels: int = 1, top: str | None = "discrete", level_changes: dict | None = None, **changes):
    """A tiny ExpConfig: top in {"discrete", "continuous", "pooled" (discrete, reading pooled vectors), None}."""
    levels = [tiny_level(**(level_changes or {})) for _ in range(num_levels)]
    top_config = None
    if top is not None:
        top_config = TopTransformerConfig(
            dim=32,
            num_layers=1,
            num_heads=2,
            ffn_dim_multiplier=2,
            continuous=top == "continuous",
            pooled_inputs=top == "pooled",
        )
    values = dict(
        num_levels=num_levels,
        compressor_level_configs=levels,
        expander_num_dec_layers=1,
        expander_max_len=256,
        top_transformer_config=top_config,
        top_lm_loss_weight=1.0 if top is not None else 0.0,
        aux_lm_loss_weight=1.0,
        seed=0,
    )
    values.update(changes)
    return ExpConfig(**values)


def real_text() -> bytes:
    return TEXT_PATH.read_bytes()


def text_windows(length: int, count: int, offset: int = 0, stride: int | None = None) -> torch.Tensor:
    """`count` windows (count, length) of BOS + text bytes, taken every `stride` bytes from `offset`."""
    data = real_text()
    stride = stride or length
    rows = []
    for i in range(count):
        start = (offset + i * stride) % (len(data) - length)
        chunk = data[start : start + length - 1]
        rows.append(torch.tensor([BOS_ID, *chunk]))
    return torch.stack(rows)


def padded_batch(texts: list[bytes], add_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS + bytes (+ EOS) per text, right-padded with PAD; returns (tokens, key_padding_mask)."""
    seqs = [[BOS_ID, *t] + ([EOS_ID] if add_eos else []) for t in texts]
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
    return tokens, tokens == PAD_ID


def train(model, batches, steps: int, lr: float = 3e-3, total_steps: int | None = None) -> list[dict]:
    """A plain AdamW loop over `batches` (a callable step -> (tokens, kpm)); returns the float losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    history = []
    for step in range(steps):
        model.set_training_progress(step, total_steps or steps)
        tokens, kpm = batches(step)
        out = model(tokens, kpm)
        optimizer.zero_grad(set_to_none=True)
        out.total_loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        history.append(
            {k: float(getattr(out, k).detach()) for k in ("total_loss", "avg_reconstruction_loss", "avg_aux_lm_loss")}
        )
    return history
