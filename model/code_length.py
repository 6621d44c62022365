"""Two-part code length in bits: what it costs to transmit a text with this model (model.md Part A).

    bits(text) = bits of the top codes under the discrete top LM (the first code predicted from a start)
               + sum over levels of bits of that level's tokens given its codes, under its expander
                 (teacher-forced cross-entropy), down to bytes.

Shapes: tokens (B, S), key_padding_mask (B, S); result (B,) bits per row. Bits per byte = bits / bytes.

Why this is a real code length: segment boundaries are not transmitted. The segmentation rule is causal (it
uses the entropy of the distribution over token t, computed from tokens < t, and causal length bounds), so a
decoder holding the codes decodes tokens left to right, recomputes the boundaries, and knows which code rows
each position may read. A level's tokens are decoded only as the level below needs them, so their count needs
no transmission; the byte level ends at EOS, so frame texts with EOS (tokenizer add_eos=True) for a
self-delimiting code. Every non-pad position is coded, BOS included (it costs ~0 bits once learned).

Only the discrete top LM defines probabilities for codes; a continuous one raises ValueError.
"""

from __future__ import annotations

import math

import torch

from model.autoencoder import HierarchicalAutoencoder, masked_cross_entropy


@torch.no_grad()
def code_length_breakdown(
    model: HierarchicalAutoencoder, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Bits per row: `top` (B,), `levels` list (B,) per level (bottom first), `total` (B,)."""
    if model.top_lm is None or model.top_lm.continuous:
        raise ValueError(
            "code_length_bits needs a discrete top LM (top_transformer_config.continuous=False): only "
            "then do the top codes have probabilities"
        )
    was_training = model.training
    model.eval()  # never update VQ statistics while measuring
    try:
        compressed = model.compress(tokens, key_padding_mask)
        logits = model.reconstruction_logits(compressed)
        per_level = []
        for out, level_logits in zip(compressed["levels"], logits, strict=True):
            nats = masked_cross_entropy(level_logits, out.tokens, ~out.key_padding_mask).sum(1)
            per_level.append(nats / math.log(2))
        top = model.top_lm_loss(compressed)
        top_bits = top["nll_nats"].sum(1) / math.log(2)
    finally:
        model.train(was_training)
    return {"top": top_bits, "levels": per_level, "total": top_bits + torch.stack(per_level).sum(0)}


def code_length_bits(
    model: HierarchicalAutoencoder, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    return code_length_breakdown(model, tokens, key_padding_mask)["total"]
