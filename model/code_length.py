"""Two-part code length in bits: what it costs to transmit a text with this model (docs/model.md).

    bits(text) = bits of the top codes under the top LM (the first code predicted from a start)
               + sum over levels of bits of that level's tokens given its codes, under its expander
                 (teacher-forced cross-entropy), down to bytes.

Shapes: tokens (B, S), key_padding_mask (B, S); result (B,) bits per row. Bits per byte = bits / bytes.

This file is the one definition of the per-position distributions whose -log2 every bits-per-byte path sums
(code length, validation, conditional code length, compression report) and that the range coder codes
(components/codec/): `position_logits` gives them, `position_bits` their -log2 at the coded symbols, and
`quantized_frequencies` the integer frequencies a range coder needs, from the same logits. The top LM's
distribution comes only from `TopLM.code_logits`; `require_code_probabilities` is the one guard for models whose
top codes have no probability.

Why this is a real code length: segment boundaries are not transmitted. The segmentation rule is causal (it
uses the entropy of the distribution over token t, computed from tokens < t, and causal length bounds), so a
decoder holding the codes decodes tokens left to right, recomputes the boundaries, and knows which code rows
each position may read. A level's tokens are decoded only as the level below needs them, so their count needs
no transmission; the byte level ends at EOS, so frame texts with EOS (tokenizer add_eos=True) for a
self-delimiting code. Every non-pad position is coded, BOS included (it costs ~0 bits once learned).

Quantized bits (`quantized=True`): a range coder cannot code a float distribution; both of its sides turn each
distribution into integer frequencies summing to 2**PRECISION_BITS, every symbol at least 1, with
`quantized_frequencies`. The quantized code length is what such a coder pays (up to its few bytes of flush),
so the codec's output size can be checked against it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from model.eval_mode import eval_mode

if TYPE_CHECKING:  # annotations only: the autoencoder imports this module
    from model.autoencoder import HierarchicalAutoencoder

PRECISION_BITS = 24  # constriction's default fixed-point precision for its categorical models
CODE_PROBABILITY_ERROR = (
    "needs a probability for the top codes, which only a top LM gives (this model has none: a stage-1 base); "
    "use a stage-2 or joint checkpoint"
)


def require_code_probabilities(model: HierarchicalAutoencoder, what: str = "a code length") -> None:
    """The one guard: bits per byte, conditional bits and the codec all need the top codes' distribution."""
    if model.top_lm is None:  # a continuous top LM has code_logits too (its temperature fitted at validation)
        raise ValueError(f"{what} {CODE_PROBABILITY_ERROR}")


@torch.no_grad()
def position_logits(model: HierarchicalAutoencoder, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None):
    """The distributions, as fp32 logits: `levels` list of (B, S_i, V_i) (logits[:, t] is the distribution of
    level i's token t given its codes), `top` (B, R, K) (row r given rows < r), and `compressed` (model.compress
    output: tokens, masks, codes). The model must be in eval mode (the callers below see to it)."""
    require_code_probabilities(model)
    compressed = model.compress(tokens, key_padding_mask)
    top = model.top_lm_loss(compressed)
    levels = [logits.float() for logits in model.reconstruction_logits(compressed, top)]
    codebook = model.compressors[-1].quantizer.codebook
    return {"levels": levels, "top": model.top_lm.code_logits(top["predictions"], codebook), "compressed": compressed}


def quantized_frequencies(logits: np.ndarray) -> np.ndarray:
    """Integer frequencies (..., V) int64 from fp32 logits (..., V): each >= 1, each row sums to 2**PRECISION_BITS.

    The encoder and the decoder call this on bit-identical logits, so they get identical integers: float64
    numpy arithmetic in a fixed order, floor, and the rounding remainder given to the most probable symbol."""
    logits = np.asarray(logits, dtype=np.float64)
    size = logits.shape[-1]
    spare = (1 << PRECISION_BITS) - size  # every symbol gets 1 first, the rest in proportion
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    frequencies = np.floor(weights / weights.sum(-1, keepdims=True) * spare).astype(np.int64) + 1
    remainder = (1 << PRECISION_BITS) - frequencies.sum(-1)
    np.put_along_axis(
        frequencies,
        weights.argmax(-1)[..., None],
        np.take_along_axis(frequencies, weights.argmax(-1)[..., None], -1) + remainder[..., None],
        -1,
    )
    return frequencies


def _bits_at(logits: torch.Tensor, symbols: torch.Tensor, valid: torch.Tensor, quantized: bool) -> torch.Tensor:
    """-log2 p(symbol) per position (B, N), 0 where not valid; p exact or quantized."""
    if quantized:
        frequencies = torch.from_numpy(quantized_frequencies(logits.detach().cpu().numpy()))
        chosen = frequencies.gather(-1, symbols.clamp_min(0).cpu()[..., None])[..., 0].double()
        bits = (PRECISION_BITS - torch.log2(chosen)).to(logits.device)
    else:
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        bits = -log_probs.gather(-1, symbols.clamp_min(0)[..., None])[..., 0] / math.log(2)
    return bits * valid


def bits_of(logits: dict, quantized: bool = False) -> dict:
    """-log2 p at the coded symbols, from `position_logits` output: levels list of (B, S_i) (0 at padding),
    top (B, R) (0 at invalid rows), compressed."""
    compressed = logits["compressed"]
    levels = [
        _bits_at(level_logits, out.tokens, ~out.key_padding_mask, quantized)
        for out, level_logits in zip(compressed.levels, logits["levels"], strict=True)
    ]
    top = _bits_at(logits["top"], compressed.top_codes, compressed.top_valid, quantized)
    return {"levels": levels, "top": top, "compressed": compressed}


def eval_position_logits(model: HierarchicalAutoencoder, tokens: torch.Tensor, key_padding_mask=None) -> dict:
    """`position_logits` in eval mode (no VQ statistic moves while measuring), the mode restored after."""
    with eval_mode(model):
        return position_logits(model, tokens, key_padding_mask)


def position_bits(
    model: HierarchicalAutoencoder,
    tokens: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    quantized: bool = False,
) -> dict:
    """Bits of every token at every level and of every top row, from one pass (see `bits_of`)."""
    return bits_of(eval_position_logits(model, tokens, key_padding_mask), quantized)


def code_length_breakdown(
    model: HierarchicalAutoencoder,
    tokens: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    quantized: bool = False,
) -> dict[str, torch.Tensor]:
    """Bits per row: `top` (B,), `levels` list (B,) per level (bottom first), `total` (B,)."""
    bits = position_bits(model, tokens, key_padding_mask, quantized)
    per_level = [level.sum(1) for level in bits["levels"]]
    top = bits["top"].sum(1)
    return {"top": top, "levels": per_level, "total": top + torch.stack(per_level).sum(0)}


def code_length_bits(
    model: HierarchicalAutoencoder,
    tokens: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    quantized: bool = False,
) -> torch.Tensor:
    return code_length_breakdown(model, tokens, key_padding_mask, quantized)["total"]
