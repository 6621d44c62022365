"""HierarchicalAutoencoder: N compression levels, N expanders and an optional top LM; `build_model(config)`.

Shapes: tokens (B, S) byte ids (model/tokenizer.py), key_padding_mask (B, S) True = padding.
Level i compresses tokens_i (tokens_0 = bytes) into codes_i (B, N_i * L_i), which are tokens_{i+1}; the
expander of level i reconstructs tokens_i from level i's quantized code rows. Lists are ordered by level,
bottom (bytes) first.

total_loss = mean reconstruction CE over levels + sum of VQ commitment losses
             + aux_lm_loss_weight * mean aux LM CE + top_lm_loss_weight * top LM loss.
The top LM reads detached code vectors: no rate term reaches the encoder (it collapsed the codebook; docs/model.md).
With `expander_reads_top_state` the top level's expander also reads the top LM's state per segment
(`top_state_per_position`), so the top LM runs before the expanders and their loss trains it as a context model.

Two stages: stage 1 trains compressors + expanders (the "base") and `save_base_components`; stage 2
`load_base_components(freeze=True)`: the base gets requires_grad False and stays in eval mode through every
`.train()` call (a stray `.train()` would set its EMA and resets moving again), so only the top LM learns and no VQ
statistic moves.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from configs.loading import ConfigError
from model import attention
from model.blocks import SelfAttention, init_weights
from model.code_length import code_length_bits
from model.compressor import Compressor, CompressorOutput
from model.expander import Expander
from model.outputs import AutoencoderOutput, CompressedText
from model.tokenizer import PAD_ID, VOCAB_SIZE
from model.top_lm import CodeSequenceTransformer

if TYPE_CHECKING:
    from configs import ExpConfig
    from configs.schema import ModelConfig


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-position CE in nats (B, S), zero where not valid."""
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    return ce * valid


class HierarchicalAutoencoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        levels = config.compressor_level_configs
        self.num_levels = config.num_levels
        self.use_continuous_expander_inputs = config.use_continuous_expander_inputs
        self.aux_lm_loss_weight = config.aux_lm_loss_weight
        self.top_lm_loss_weight = config.top_lm_loss_weight
        lookback = config.cross_lookback

        top = config.top_transformer_config
        self.reads_top_state = config.expander_reads_top_state
        top_state_dim = top.dim if self.reads_top_state else None
        compressors, expanders = [], []
        for i, level in enumerate(levels):
            vocab = VOCAB_SIZE if i == 0 else levels[i - 1].codebook_size
            compressors.append(Compressor(level, vocab))
            dim = max(1, int(level.dim * config.expander_dim_scale))
            heads = max(1, int(level.heads * config.expander_heads_scale))
            while dim % heads:
                heads -= 1
            expanders.append(
                Expander(
                    vocab_size=vocab,
                    memory_dim=level.dim,
                    dim=dim,
                    heads=heads,
                    num_layers=config.expander_num_dec_layers,
                    window=level.window,
                    lookback=lookback,
                    rows_per_segment=level.num_queries,
                    ffn_multiplier=level.encoder_ffn_dim_multiplier,
                    lm_state_dim=level.dim if config.expander_reads_lm_state else None,
                    top_state_dim=top_state_dim if i == len(levels) - 1 else None,
                )
            )
        self.compressors = nn.ModuleList(compressors)
        self.expanders = nn.ModuleList(expanders)
        self.top_lm = None
        if top is not None:
            self.top_lm = CodeSequenceTransformer(
                levels[-1].dim,
                top.dim,
                top.num_layers,
                top.num_heads,
                top.ffn_dim_multiplier,
                top.continuous,
                pooled_inputs=top.pooled_inputs,
                rows_per_segment=levels[-1].num_queries,
                codebook_size=levels[-1].codebook_size if top.code_bias else None,
                initial_inverse_temperature=top.initial_inverse_temperature,
            )
        init_weights(self)
        self.base_frozen = False
        self.set_attention_backend(config.attention_backend)

    def set_attention_backend(self, name: str) -> None:
        """The sliding-window kernel of every self-attention layer of this model (not of any other)."""
        if name not in attention.BACKENDS:
            raise ValueError(f"unknown attention backend {name!r}; use one of {', '.join(attention.BACKENDS)}")
        for module in self.modules():
            if isinstance(module, SelfAttention):
                module.backend = name

    # ---------------------------------------------------------------- compression
    def compress(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> CompressedText:
        """Run every compressor: one CompressorOutput per level (bottom first) and the top codes."""
        kpm = key_padding_mask
        if kpm is None:  # PAD is never content, even when the caller passes no mask
            kpm = tokens == PAD_ID
        outputs: list[CompressorOutput] = []
        level_tokens = tokens
        for compressor in self.compressors:
            out = compressor(level_tokens, kpm)
            outputs.append(out)
            # The next level reads this level's codes; invalid rows are its padding, always.
            level_tokens, kpm = out.codes, ~out.row_valid
        return CompressedText(outputs)

    def reconstruction_logits(
        self, compressed: CompressedText, top: dict[str, torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Teacher-forced logits of every level's expander (bottom first); `top` the `top_lm_loss` of the same
        compressed text when the top expander reads the top LM's state (computed here if not given).

        With use_continuous_expander_inputs the expanders read the pre-VQ vectors only while training: a
        receiver holds codes, never pre-VQ vectors, so in eval mode (every code length, validation, evaluation)
        they read the quantized vectors, and the bits reported are bits a decoder can achieve."""
        logits = []
        continuous = self.use_continuous_expander_inputs and self.training
        top_state = None
        if self.reads_top_state:
            top = top if top is not None else self.top_lm_loss(compressed)
            top_state = self.top_state_per_position(top["hidden"], compressed.levels[-1].segment_ids)
        for i, (expander, out) in enumerate(zip(self.expanders, compressed.levels, strict=True)):
            memory = out.pre_vq if continuous else out.quantized
            level_top_state = top_state if i == self.num_levels - 1 else None
            logits.append(
                expander(
                    out.tokens,
                    out.key_padding_mask,
                    out.segment_ids,
                    memory,
                    out.row_valid,
                    out.lm_state,
                    level_top_state,
                )
            )
        return logits

    def top_state_per_position(self, hidden: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
        """The top LM's state (B, S, D_top) of each top-level token's segment: hidden[:, segment_ids[t] * L], the
        row that predicts the segment's first code. It has read the codes and pooled vectors of earlier segments
        only; the next segment's row (s + 1) * L would hold segment s's own pooled vector, i.e. bytes a decoder
        has not decoded yet. Padding (segment -1) reads row 0."""
        rows = segment_ids.clamp_min(0) * self.compressors[-1].num_queries
        return hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1]))

    def top_lm_inputs(
        self, codes: torch.Tensor, row_valid: torch.Tensor, pooled: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the top LM reads for top rows codes (B, N): their code vectors and, if it reads them, the pooled
        vectors pooled (B, N, D) (`pre_vq` of `compress`, or `Compressor.pooled_vectors` of decoded tokens),
        both detached and zero at invalid rows. The one source of its inputs: scoring (`top_lm_loss`) and
        decoding (model/generation.py's TopCodeSource) both call it."""
        keep = row_valid[..., None]
        vectors = self.compressors[-1].quantizer.lookup(codes).detach() * keep
        if not self.top_lm.pooled_inputs:
            return vectors, None
        return vectors, pooled.detach() * keep

    def top_lm_loss(self, compressed: CompressedText) -> dict[str, torch.Tensor] | None:
        if self.top_lm is None:
            return None
        top = compressed.levels[-1]
        vectors, pooled = self.top_lm_inputs(top.codes, top.row_valid, top.pre_vq)
        codebook = self.compressors[-1].quantizer.codebook
        return self.top_lm.loss(vectors, top.codes, top.row_valid, codebook, pooled)

    # ---------------------------------------------------------------- training objective
    def forward(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> AutoencoderOutput:
        base_grad = torch.is_grad_enabled() and not self.base_frozen
        with torch.set_grad_enabled(base_grad):
            compressed = self.compress(tokens, key_padding_mask)
        top = self.top_lm_loss(compressed)  # first: the top expander may read its state
        with torch.set_grad_enabled(base_grad):
            recon_logits = self.reconstruction_logits(compressed, top)
            recon, accuracy, aux = [], [], []
            for out, logits in zip(compressed.levels, recon_logits, strict=True):
                real = ~out.key_padding_mask
                count = real.sum().clamp_min(1)
                recon.append(masked_cross_entropy(logits, out.tokens, real).sum() / count)
                accuracy.append(((logits.argmax(-1) == out.tokens) & real).sum() / count)
                aux_valid = real[:, 1:]
                aux_ce = masked_cross_entropy(out.lm_logits[:, :-1], out.tokens[:, 1:], aux_valid)
                aux.append(aux_ce.sum() / aux_valid.sum().clamp_min(1))
            avg_recon = torch.stack(recon).mean()
            avg_aux = torch.stack(aux).mean()
            vq_loss = torch.stack([o.vq_loss for o in compressed.levels]).sum()

        top_loss = top["loss"] if top is not None else torch.zeros((), device=tokens.device)
        total = avg_recon + vq_loss + self.aux_lm_loss_weight * avg_aux + self.top_lm_loss_weight * top_loss
        levels = compressed.levels
        return AutoencoderOutput(
            total_loss=total,
            avg_reconstruction_loss=avg_recon,
            reconstruction_losses=recon,
            reconstruction_accuracies=accuracy,
            vq_loss=vq_loss,
            avg_aux_lm_loss=avg_aux,
            aux_lm_losses=aux,
            avg_top_code_lm_loss=top_loss,
            all_codebook_perplexities=[o.metrics["batch_perplexity"] for o in levels],
            all_smoothed_perplexities=[o.metrics["ema_perplexity"] for o in levels],
            live_codes=[o.metrics["live_codes"] for o in levels],
            code_resets=[o.metrics["resets"] for o in levels],
            reconstruction_logits=recon_logits,
            compressed=compressed,
            top_code_accuracy=top.get("accuracy") if top is not None else None,
        )

    def set_training_progress(self, step: int, total_steps: int | None = None) -> None:
        """Tell the quantizers where training is (reset schedule: none in the second half of training)."""
        for compressor in self.compressors:
            compressor.quantizer.set_training_progress(step, total_steps)

    # ---------------------------------------------------------------- likelihood and generation
    def code_length_bits(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Two-part code length in bits per row (B,); see model.code_length."""
        return code_length_bits(self, tokens, key_padding_mask)

    def decompress(
        self,
        top_codes: torch.Tensor,
        top_valid: torch.Tensor | None = None,
        max_len: int | None = None,
        compressed: CompressedText | None = None,
    ) -> torch.Tensor:
        """Greedy bytes (B, T) from top codes; see model.generation.decompress."""
        from model.generation import decompress

        return decompress(self, top_codes, top_valid, max_len, compressed)

    def generate_bytes(
        self, prompt_tokens: torch.Tensor, max_new_bytes: int, temperature: float = 0.0, generator=None
    ) -> torch.Tensor:
        """Continuation of the prompt (S,) or (B, S); see model.generation.generate_bytes."""
        from model.generation import generate_bytes

        return generate_bytes(self, prompt_tokens, max_new_bytes, temperature, generator)

    # ---------------------------------------------------------------- two-stage training
    def base_modules(self) -> list[nn.Module]:
        return [self.compressors, self.expanders]

    def save_base_components(self, path) -> None:
        """Compressors + expanders as tensors only (weights_only=True loads it; no ring buffers)."""
        torch.save({"compressors": self.compressors.state_dict(), "expanders": self.expanders.state_dict()}, path)

    def load_base_components(self, path, freeze: bool = True) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name in ("compressors", "expanders"):
            try:
                getattr(self, name).load_state_dict(state[name])
            except (KeyError, RuntimeError) as error:
                raise RuntimeError(f"base components {path}: the {name} do not fit this model: {error}") from error
        if freeze:
            self.freeze_base()

    def freeze_base(self) -> None:
        self.base_frozen = True
        for module in self.base_modules():
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.base_frozen:  # a frozen base never returns to train mode (no EMA, no resets)
            for module in self.base_modules():
                module.eval()
        return self


def require_memory_for(exp_config: ExpConfig, origin: str, bytes_per_parameter: int = 4) -> None:
    """Refuse, in one line and before anything is allocated, a model whose parameters alone (bytes_per_parameter
    each: 4 to hold fp32 weights, 16 to train them with Adam) exceed this machine's memory. torch would otherwise
    fail inside an allocation with a traceback, or the kernel would kill the process while the weights are
    initialised. The parameters are counted on the meta device (no memory, about 25 ms)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # a platform that does not say: nothing to check against
        return
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        parameters = sum(p.numel() for p in HierarchicalAutoencoder(exp_config.model).parameters())
    if parameters * bytes_per_parameter > memory:
        raise ConfigError(
            f"{origin}: the model has {parameters:,} parameters, {parameters * bytes_per_parameter / 2**30:,.1f} GiB "
            f"at {bytes_per_parameter} bytes each, more than this machine's {memory / 2**30:,.1f} GiB of memory"
        )


def build_model(exp_config: ExpConfig) -> HierarchicalAutoencoder:
    """The model of exp_config's `model` section; init is seeded by exp_config.seed (the global RNG is left as is).

    The model keeps the whole experiment as `exp_config` for those that hold only the model: the codec windows
    texts by its `data.sequence_length`, and a checkpoint of the model stores it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp_config.seed)
        model = HierarchicalAutoencoder(exp_config.model)
    model.exp_config = exp_config
    return model
