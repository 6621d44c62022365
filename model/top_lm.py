"""Top LM (CodeSequenceTransformer): a causal transformer over the top level's code vectors.

Shapes: vectors (B, N, D_code) the top level's code vectors (codebook rows, detached), valid (B, N),
codes (B, N) long; predictions (B, N, D_code) where prediction k comes from [start, v_0 .. v_{k-1}], so the
first code has a probability too (a learned start vector), which a code length needs.

- continuous=False: logits over the K codes = -squared distance to each codebook row (per dim), times a
  learned inverse temperature (starting at `initial_inverse_temperature`), plus, with code_bias, a learned
  log prior per code; loss = cross-entropy. This gives the bits of the top codes.
- continuous=True: loss = MSE to the next vector, averaged over dims and valid positions. The distribution over
  codes is the same `code_logits` (the one method every code length and the range coder read), with an inverse
  temperature that the MSE never trains: `fit_inverse_temperature` sets it to the value that minimises the
  codes' cross-entropy on held-out data (validation does, before each checkpoint), so it is stored in the
  checkpoint with the other parameters.

With pooled_inputs=True it also reads the continuous pooled (pre-VQ) vectors of past segments, pooled (B, N, D_code):
the input of row r is its code vector plus, when row r is the last row of its segment, that row's pooled vector.
The code is a lossy summary of its segment; the pooled vector carries what the VQ dropped, and a decoder has it
for free: by the time it needs row r + 1 it has decoded every byte of row r's segment, and segmentation and
pooling are causal, so it recomputes the vector (`Compressor.pooled_vectors`). Rows of a segment other than its
last are predicted before their segment is decoded, so their pooled vectors are never read.

It reads the codebook (passed in, detached) and never updates it: no EMA, no resets, no shared training-mode
quantizer (a top LM that trained the codebook it predicts would move its own targets).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.attention import KeyValueCache
from model.blocks import NORM_EPS, TransformerBlock


class CodeSequenceTransformer(nn.Module):
    def __init__(
        self,
        code_dim: int,
        dim: int,
        num_layers: int,
        heads: int,
        ffn_multiplier: float,
        continuous: bool,
        pooled_inputs: bool = False,
        rows_per_segment: int = 1,
        codebook_size: int | None = None,
        initial_inverse_temperature: float = 1.0,
    ):
        super().__init__()
        self.continuous, self.pooled_inputs, self.rows_per_segment = continuous, pooled_inputs, rows_per_segment
        self.start = nn.Parameter(torch.randn(dim) * 0.02)
        self.in_norm = nn.RMSNorm(code_dim, eps=NORM_EPS)
        self.in_proj = nn.Linear(code_dim, dim, bias=False)
        if pooled_inputs:
            self.pooled_norm = nn.RMSNorm(code_dim, eps=NORM_EPS)
            self.pooled_proj = nn.Linear(code_dim, dim, bias=False)
        self.layers = nn.ModuleList(TransformerBlock(dim, heads, None, ffn_multiplier) for _ in range(num_layers))
        self.norm = nn.RMSNorm(dim, eps=NORM_EPS)
        self.out_proj = nn.Linear(dim, code_dim, bias=False)
        self.log_inverse_temperature = nn.Parameter(torch.tensor(math.log(initial_inverse_temperature)))
        # A learned log prior per code (codebook_size given): codes are used unevenly, and without it the
        # distances alone must encode each code's frequency.
        self.code_bias = nn.Parameter(torch.zeros(codebook_size)) if codebook_size else None

    def predict(self, vectors: torch.Tensor, valid: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions (B, N, D_code); position k is predicted from the rows before k (code vectors, and with
        pooled_inputs the pooled vectors of the segments closed by then)."""
        return self.out_proj(self.hidden_states(vectors, valid, pooled))

    def hidden_states(
        self, vectors: torch.Tensor, valid: torch.Tensor, pooled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The state h (B, N, dim) that `predict` projects: h[:, k] has read the rows before k only (the top
        level's expander reads h[:, s * L] with `expander_reads_top_state`)."""
        B, N = vectors.shape[:2]
        if self.pooled_inputs and pooled is not None:
            closed = self.closes_segment(torch.arange(N - 1, device=vectors.device))[None, :, None]  # (1, N-1, 1)
            pooled = pooled[:, :-1] * closed
        previous = self._row_inputs(vectors[:, :-1], pooled)
        x = torch.cat([self.start.expand(B, 1, -1).to(previous.dtype), previous], dim=1)
        kpm = ~valid
        for layer in self.layers:
            x = layer(x, kpm)
        return self.norm(x)

    def _row_inputs(self, vectors: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        """The input (..., dim) that rows with code vectors (..., D_code) give the next position: the code vector
        and, with pooled_inputs, the pooled vector (zero where the row does not close its segment: it adds
        nothing). The one formula of `predict` and `step`."""
        x = self.in_proj(self.in_norm(vectors))
        if not self.pooled_inputs:
            return x
        if pooled is None:
            raise ValueError("this top LM reads the pooled vectors of past segments (pooled_inputs=True)")
        return x + self.pooled_proj(self.pooled_norm(pooled))

    def closes_segment(self, rows: torch.Tensor) -> torch.Tensor:
        """Whether each top row index is the last row of its segment: the rows whose pooled vector is read."""
        return rows % self.rows_per_segment == self.rows_per_segment - 1

    def new_caches(self) -> list[KeyValueCache]:
        return [KeyValueCache(layer.attn.window) for layer in self.layers]

    @torch.no_grad()
    def step(
        self,
        previous: torch.Tensor | None,
        caches: list[KeyValueCache],
        batch: int,
        pooled: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`predict` one position at a time with KV caches (decoding), for `batch` rows: previous (B, D_code) the
        vector before this position (None at position 0: the start vector); with pooled_inputs, pooled (B, D_code)
        the pooled vector of that row, zero where the row does not close its segment (`closes_segment`: zero adds
        nothing, as in `predict`). Returns its prediction (B, D_code) and its hidden state (B, dim)
        (`hidden_states`' row)."""
        if previous is None:
            x = self.start.expand(batch, 1, -1)
        else:
            x = self._row_inputs(previous, pooled)[:, None]
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer.step(x, cache)
        hidden = self.norm(x)[:, 0]
        return self.out_proj(hidden), hidden

    def code_logits(self, predictions: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """(B, N, D) x (K, D) -> (B, N, K) in fp32: -(mean squared difference per dim) * inverse temperature.

        Code vectors have RMS 1 (the pooler normalises them), so this is on a fixed scale. (Normalising by the
        codebook's spread instead was unstable: a briefly collapsed codebook blew the logits up.)"""
        p, c = predictions.float(), codebook.detach().float()
        squared = (p * p).sum(-1, keepdim=True) - 2 * p @ c.t() + (c * c).sum(-1)
        logits = -squared / c.shape[-1] * self.log_inverse_temperature.float().exp()
        return logits if self.code_bias is None else logits + self.code_bias.float()

    def loss(
        self,
        vectors: torch.Tensor,
        codes: torch.Tensor,
        valid: torch.Tensor,
        codebook: torch.Tensor,
        pooled: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mean loss over valid positions, plus `nll_nats` (B, N) per position in discrete mode, `predictions`
        and `hidden` (B, N, dim) (`hidden_states`, not detached: an expander that reads it trains it)."""
        vectors = vectors.detach()
        hidden = self.hidden_states(vectors, valid, None if pooled is None else pooled.detach())
        predictions = self.out_proj(hidden)
        count = valid.sum().clamp_min(1)
        if self.continuous:
            mse = ((predictions.float() - vectors.float()) ** 2).mean(-1)
            result = {"loss": (mse * valid).sum() / count, "predictions": predictions, "hidden": hidden}
            if not self.training:  # the code length's share; training never needs it
                logits = self.code_logits(predictions.detach(), codebook)
                result["nll_nats"] = F.cross_entropy(logits.transpose(1, 2), codes, reduction="none") * valid
            return result
        logits = self.code_logits(predictions, codebook)
        nll = F.cross_entropy(logits.transpose(1, 2), codes, reduction="none") * valid
        accuracy = ((logits.argmax(-1) == codes) & valid).sum() / count
        return {
            "loss": nll.sum() / count,
            "nll_nats": nll,
            "accuracy": accuracy,
            "predictions": predictions,
            "hidden": hidden,
        }

    @torch.no_grad()
    def fit_inverse_temperature(
        self, predictions: list[torch.Tensor], codes: list[torch.Tensor], codebook: torch.Tensor
    ) -> float:
        """Set the inverse temperature of `code_logits` to the one that minimises the mean cross-entropy of
        `codes` (n,) given `predictions` (n, D) (lists of valid rows, e.g. one entry per validation batch).

        The mean NLL is convex in the inverse temperature (a log-sum-exp of functions linear in it), so a
        golden-section search over its logarithm finds the optimum. Returns the fitted inverse temperature."""
        p = torch.cat([x.float() for x in predictions]) if predictions else torch.zeros(0, codebook.shape[1])
        target = torch.cat(codes) if codes else torch.zeros(0, dtype=torch.long)
        if p.shape[0] == 0:
            return float(self.log_inverse_temperature.exp())
        c = codebook.detach().float()
        distances = ((p * p).sum(-1, keepdim=True) - 2 * p @ c.t() + (c * c).sum(-1)) / c.shape[-1]  # (n, K)
        true = distances.gather(1, target[:, None].to(distances.device))[:, 0]
        bias = torch.zeros(c.shape[0]) if self.code_bias is None else self.code_bias.detach().float()
        true_bias = bias.to(distances.device)[target.to(distances.device)]

        def mean_nll(log_beta: float) -> float:
            beta = math.exp(log_beta)
            return float((beta * true - true_bias + torch.logsumexp(bias - beta * distances, dim=-1)).mean())

        low, high = -8.0, 12.0
        ratio = (math.sqrt(5) - 1) / 2
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        fa, fb = mean_nll(a), mean_nll(b)
        for _ in range(48):
            if fa < fb:
                high, b, fb = b, a, fa
                a = high - ratio * (high - low)
                fa = mean_nll(a)
            else:
                low, a, fa = a, b, fb
                b = low + ratio * (high - low)
                fb = mean_nll(b)
        self.log_inverse_temperature.fill_((low + high) / 2)
        return math.exp((low + high) / 2)
