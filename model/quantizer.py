"""EMA vector quantizer: nearest-code lookup with a codebook learned by exponential moving averages.

Shapes: z (..., D) pooled vectors with a validity mask (...,); codes (...,) long; quantized (..., D).

Design (the measured reasons are in docs/model.md):
- The codebook is a buffer, never an optimizer parameter (the EMA alone trains it); the only loss is the commitment term
  beta * |z - sg(q)|^2 over valid rows.
- EMA statistics and distances are fp32 whatever the autocast dtype (a bf16 running count stalls).
- Initialisation is consistent (no unused code's norm blows up): codebook = ema_sum / ema_count with
  ema_count = 1 from construction, and the first training batch re-initialises the codebook from data.
- Invalid rows (padding, empty segment slots) are never quantized, counted, averaged or buffered; their
  output is zero and their code is 0 (callers carry the mask).
- Dead-code reset every `reset_interval` steps: a code is dead if unused for R steps and below average EMA
  usage; R = 5 during the first 100 steps, then 25; no resets in the second half of training when the total is
  known. "Steps" are the trainer's optimizer steps (`set_training_progress`), else training forwards.
  Replacements come from a ring buffer of recent valid inputs that is not in the state_dict (so model files
  stay small); the trainer's checkpoint carries it (`reset_buffer_state`), so a resume replays the same resets.
- Metrics: batch and EMA perplexity, live codes (used in the last R_late steps), total resets.

Data parallel: EMA counts and sums are all-reduced and the valid rows of all ranks are gathered (in rank order)
for data initialisation and the ring buffer, so every rank makes exactly the update, the initial codebook and
the resets that one process would make from the whole global batch (same seed, same random draws); rank 0's
result is broadcast after initialisation and resets, so ranks stay identical even if their seeds differ.

Residual VQ (depth > 1) would return codes (..., depth) and keep this interface (`forward`, `lookup`,
`codebook`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (..., D) straight-through: forward value = code vector, gradient -> z
    codes: torch.Tensor  # (...,) long, 0 at invalid rows
    loss: torch.Tensor  # scalar commitment loss
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """The valid rows of every rank, concatenated in rank order (the rows one process would see)."""
    if not _distributed():
        return rows
    sizes = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([rows.shape[0]], device=rows.device))
    longest = int(max(size.item() for size in sizes))
    padded = rows.new_zeros(longest, rows.shape[1])
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(size.item())] for part, size in zip(gathered, sizes, strict=True)])


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    total = counts.sum()
    if total <= 0:
        return torch.ones((), device=counts.device)
    p = counts / total
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class EmaVectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int,
        dim: int,
        beta: float = 0.25,
        decay: float = 0.99,
        reset_interval: int = 250,
        eps: float = 1e-5,
        ring_size: int = 8192,
        vectors_per_step: int = 1024,
    ):
        super().__init__()
        self.num_codes, self.dim, self.beta, self.decay = num_codes, dim, beta, decay
        self.reset_interval, self.eps, self.vectors_per_step = reset_interval, eps, vectors_per_step
        self.stale_steps_early, self.stale_steps_late, self.early_steps = 5, 25, 100
        codebook = torch.randn(num_codes, dim) * dim**-0.5
        self.register_buffer("codebook", codebook)
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", codebook.clone())
        self.register_buffer("last_used", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # training forwards seen
        self.register_buffer("last_reset_check", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_resets", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # Recent valid inputs for resets: a plain tensor, not a buffer, so it is neither saved nor broadcast by
        # DistributedDataParallel every step; `_remember` moves it to the inputs' device.
        self.ring = torch.zeros(ring_size, dim)
        self.ring_position = 0
        self.ring_filled = 0
        self.progress_step: int | None = None
        self.total_steps: int | None = None

    # ---- read-only views (the top LM and generation use these; they never change state) ----
    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codebook[codes]

    def squared_distances(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., K) squared Euclidean distances to every code, in fp32."""
        x = x.float()
        c = self.codebook
        return (x * x).sum(-1, keepdim=True) - 2 * x @ c.t() + (c * c).sum(-1)

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.squared_distances(x).argmin(-1)

    def set_training_progress(self, step: int, total_steps: int | None) -> None:
        """The trainer's optimizer step (and total): staleness, reset intervals and the reset schedule then count
        optimizer steps, whatever the gradient accumulation. Without it they count training forwards."""
        self.progress_step, self.total_steps = step, total_steps

    def clock(self) -> int:
        return int(self.updates) if self.progress_step is None else self.progress_step

    # ---- training-time quantization ----
    def forward(self, z: torch.Tensor, valid: torch.Tensor) -> QuantizerOutput:
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self._quantize(z.float(), valid)

    def _quantize(self, z: torch.Tensor, valid: torch.Tensor) -> QuantizerOutput:
        flat, flat_valid = z.reshape(-1, self.dim), valid.reshape(-1)
        rows = flat[flat_valid]  # (n, D)
        # Under data parallelism every rank must join the collectives, even one whose batch has no valid row.
        update = self.training and (rows.shape[0] > 0 or _distributed())
        global_rows = _gather_rows(rows.detach()) if update else rows
        if update and not bool(self.initialized):
            self._init_from_data(global_rows)

        codes_valid = (
            self.squared_distances(rows.detach()).argmin(-1) if rows.shape[0] else rows.new_zeros(0, dtype=torch.long)
        )
        counts = torch.bincount(codes_valid, minlength=self.num_codes).float()
        if update:
            self._ema_update(rows.detach(), codes_valid, counts, global_rows)
        chosen = self.codebook[codes_valid]  # after the update, like the reference EMA VQ

        codes = torch.zeros(flat.shape[0], dtype=torch.long, device=z.device)
        codes[flat_valid] = codes_valid
        quantized = torch.zeros_like(flat)
        quantized[flat_valid] = rows + (chosen - rows).detach()
        if rows.shape[0]:
            loss = self.beta * ((rows - chosen.detach()) ** 2).mean()
        else:
            loss = z.sum() * 0.0
        step = self.clock()
        metrics = {
            "batch_perplexity": perplexity(counts),
            "ema_perplexity": perplexity(self.ema_count),
            "live_codes": ((step - self.last_used) < self.stale_steps_late).sum(),
            "resets": self.total_resets.clone(),
        }
        return QuantizerOutput(quantized.view_as(z), codes.view(z.shape[:-1]), loss, metrics)

    @torch.no_grad()
    def _init_from_data(self, rows: torch.Tensor) -> None:
        if rows.shape[0] > 0:
            self._set_codes_from_data(rows)
        self._broadcast_from_rank0(self.codebook, self.ema_sum, self.ema_count)
        self.initialized.fill_(True)

    @staticmethod
    def _broadcast_from_rank0(*buffers: torch.Tensor) -> None:
        """With the same seed every rank drew the same rows already; this keeps ranks identical even if not."""
        if _distributed():
            for buffer in buffers:
                dist.broadcast(buffer, src=0)

    def _set_codes_from_data(self, rows: torch.Tensor) -> None:
        n = rows.shape[0]
        pick = torch.randperm(n, device=rows.device)[: self.num_codes]
        if n < self.num_codes:  # too few rows: repeat them with a little noise so the codes differ
            extra = torch.randint(0, n, (self.num_codes - n,), device=rows.device)
            pick = torch.cat([pick, extra])
        vectors = rows[pick].clone()
        noise_scale = 0.01 * (rows.std() if n > 1 else rows.abs().mean()).clamp_min(1e-6)
        vectors[n:] += torch.randn_like(vectors[n:]) * noise_scale
        self.codebook.copy_(vectors)
        self.ema_sum.copy_(vectors)
        self.ema_count.fill_(1.0)

    @torch.no_grad()
    def _ema_update(
        self, rows: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor, global_rows: torch.Tensor
    ) -> None:
        self.updates += 1
        step = self.clock()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, rows)
        if _distributed():
            counts = counts.clone()
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self.last_used[counts > 0] = step
        self._remember(global_rows)
        if step - int(self.last_reset_check) >= self.reset_interval and self._resets_allowed():
            self.last_reset_check.fill_(step)
            self._reset_dead_codes(step)
            self._broadcast_from_rank0(self.codebook, self.ema_sum, self.ema_count, self.last_used, self.total_resets)

    def _resets_allowed(self) -> bool:
        if self.total_steps is None or self.progress_step is None:
            return True
        return self.progress_step < self.total_steps // 2

    def _remember(self, rows: torch.Tensor) -> None:
        if self.ring.device != rows.device:
            self.ring = self.ring.to(rows.device)
        size = self.ring.shape[0]
        if rows.shape[0] > self.vectors_per_step:
            rows = rows[torch.randperm(rows.shape[0], device=rows.device)[: self.vectors_per_step]]
        rows = rows[-size:]
        idx = (self.ring_position + torch.arange(rows.shape[0], device=rows.device)) % size
        self.ring[idx] = rows
        self.ring_position = (self.ring_position + rows.shape[0]) % size
        self.ring_filled = min(size, self.ring_filled + rows.shape[0])

    def reset_buffer_state(self) -> dict:
        """The ring of recent inputs and its position, as plain tensors and ints (a checkpoint entry)."""
        return {
            "ring": self.ring[: self.ring_filled].detach().cpu().clone(),
            "position": self.ring_position,
            "filled": self.ring_filled,
            "size": self.ring.shape[0],
        }

    def load_reset_buffer_state(self, state: dict) -> None:
        """Restore what `reset_buffer_state` returned; a ring of another size or width is refused."""
        ring, size = state["ring"], int(state["size"])
        if size != self.ring.shape[0] or ring.shape[1:] != self.ring.shape[1:] or ring.shape[0] != int(state["filled"]):
            raise ValueError(
                f"reset buffer of shape {tuple(ring.shape)} (size {size}) does not fit {tuple(self.ring.shape)}"
            )
        restored = torch.zeros_like(self.ring, device=self.codebook.device)
        restored[: ring.shape[0]] = ring.to(restored.device)
        self.ring, self.ring_position, self.ring_filled = restored, int(state["position"]), int(state["filled"])

    def _reset_dead_codes(self, step: int) -> None:
        stale_after = self.stale_steps_early if step < self.early_steps else self.stale_steps_late
        dead = ((step - self.last_used) >= stale_after) & (self.ema_count < self.ema_count.mean())
        dead_ids = dead.nonzero().squeeze(1)
        n = min(dead_ids.numel(), self.ring_filled)
        if n == 0:
            return
        dead_ids = dead_ids[torch.randperm(dead_ids.numel(), device=dead_ids.device)[:n]]
        source = torch.randperm(self.ring_filled, device=dead_ids.device)[:n]
        vectors = self.ring[source]
        self.codebook[dead_ids] = vectors
        self.ema_sum[dead_ids] = vectors
        self.ema_count[dead_ids] = 1.0
        self.last_used[dead_ids] = step
        self.total_resets += n
