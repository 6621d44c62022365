"""Periodic checks during training: validation loss and bits per byte on the val split, and a sample text.

Bits per byte is the model's two-part code length (model/code_length.py) over the real bytes of the val windows;
it exists whenever the model has a top LM. A continuous top LM's distribution over codes has an inverse
temperature that its MSE loss never trains: each validation pass first fits it on these val windows
(`fit_inverse_temperature`), and the checkpoint written after validation stores it. Without a top LM (stage 1),
the reconstruction cross-entropy in bits per byte is reported instead, which is the cost of the bytes given the
codes, not a full code length.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from components.data.byte_windows import iter_eval_windows
from configs import ExpConfig
from model.eval_mode import eval_mode
from model.tokenizer import NUM_BYTES, ByteTokenizer


def _val_batches(data_dir: Path, config: ExpConfig):
    return iter_eval_windows(
        data_dir,
        "val",
        config.data.sequence_length,
        config.data.batch_size,
        max_bytes=config.validation.validation_max_bytes,
    )


@torch.no_grad()
def fit_top_lm_temperature(model: torch.nn.Module, data_dir: Path, config: ExpConfig, device: torch.device) -> float:
    """Fit a continuous top LM's inverse temperature on the val windows; returns it."""
    predictions, codes = [], []
    for batch in _val_batches(data_dir, config):
        compressed = model.compress(batch["tokens"].to(device), batch["key_padding_mask"].to(device))
        top = model.top_lm_loss(compressed)
        valid = compressed.top_valid
        predictions.append(top["predictions"][valid].float())
        codes.append(compressed.top_codes[valid])
    codebook = model.compressors[-1].quantizer.codebook
    return model.top_lm.fit_inverse_temperature(predictions, codes, codebook)


@torch.no_grad()
def validate(model: torch.nn.Module, data_dir: Path, config: ExpConfig, device: torch.device) -> dict[str, float]:
    total_loss = reconstruction = bits = 0.0
    batches = byte_count = 0
    metrics: dict[str, float] = {}
    with eval_mode(model):
        if config.model.has_code_length and model.top_lm.continuous:
            metrics["val/top_lm_inverse_temperature"] = fit_top_lm_temperature(model, data_dir, config, device)
        for batch in _val_batches(data_dir, config):
            tokens = batch["tokens"].to(device)
            padding = batch["key_padding_mask"].to(device)
            outputs = model(tokens, key_padding_mask=padding)
            total_loss += float(outputs.total_loss)
            reconstruction += float(outputs.avg_reconstruction_loss)
            if config.model.has_code_length:
                bits += float(model.code_length_bits(tokens, key_padding_mask=padding).sum())
            byte_count += int(((tokens < NUM_BYTES) & ~padding).sum())
            batches += 1
    if batches == 0:
        return metrics
    metrics.update(
        {
            "val/loss": total_loss / batches,
            "val/reconstruction_loss": reconstruction / batches,
            "val/reconstruction_bits_per_byte": reconstruction / batches / math.log(2),
        }
    )
    if config.model.has_code_length and byte_count:
        metrics["val/bits_per_byte"] = bits / byte_count
    return metrics


@torch.no_grad()
def generate_sample(model: torch.nn.Module, config: ExpConfig, device: torch.device) -> str:
    """The configured prompt, its reconstruction from its own codes, and (with a top LM) a continuation."""
    tokenizer = ByteTokenizer()
    prompt = config.validation.sample_prompt_for_generation
    tokens = tokenizer.encode(prompt, add_bos=True).unsqueeze(0).to(device)
    with eval_mode(model):
        compressed = model.compress(tokens)
        reconstructed = model.decompress(compressed.top_codes, compressed=compressed)
        lines = [f"Prompt: {prompt}", f"Reconstructed: {tokenizer.decode_text(reconstructed[0])}"]
        if config.model.top_transformer_config is not None:
            continuation = model.generate_bytes(tokens, max_new_bytes=config.validation.generation_max_len_override)
            lines.append(f"Continuation: {tokenizer.decode_text(continuation[0])}")
    return "\n".join(lines) + "\n"
