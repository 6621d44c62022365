"""Adaptive coding: fine-tune the model on the file while it is coded, identically at both ends.

After each round (one window of every stream, components/codec/files.py), encoder and decoder hold the same
tokens (the windows, known and new) and the same weights, so both can take the same optimizer steps on them (one
batch) and code the next round with the updated model. The update
is the training loss (reconstruction + VQ commitment + auxiliary LM + top LM) in eval mode: the codebook's EMA
statistics and resets stay frozen, so the codes keep their meaning and no random number is drawn. On one CPU
thread in fp32 the forward, backward and Adam step are deterministic, so the two ends stay bit-identical (the
round-trip tests check it).

Where the time goes (docs/benchmarks.md, "the adaptive codec"): each step's forward and backward over the round's
windows, mostly matrix products; Adam is about 1% of a step. The optimizer is `CodecAdam`, the arithmetic of
torch.optim.Adam(foreach=False) written out, because constructing any torch.optim optimizer imports
torch._dynamo (1.3 s of CPU on a quiet machine, up to 5 s on the loaded one), a fixed cost on every adaptive
compress and decompress that a small file notices; it also pins the update the file format depends on, whatever
torch's optimizer does in a later version.
"""

from __future__ import annotations

import torch

from components.codec.file_format import AdaptSettings
from model.tokenizer import PAD_ID


class CodecAdam:
    """Adam with torch.optim.Adam's defaults (betas 0.9 and 0.999, eps 1e-8, no weight decay, no amsgrad), op for op
    as torch 2.13's `_single_tensor_adam` (torch/optim/adam.py) computes it for real fp32 tensors, so its updates
    are bit-identical to torch.optim.Adam(foreach=False) (tests/test_codec_adaptation.py compares them)."""

    def __init__(self, parameters: list[torch.Tensor], learning_rate: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.parameters, self.learning_rate, self.betas, self.eps = parameters, learning_rate, betas, eps
        # Per parameter, from its first gradient on: [steps, exp_avg, exp_avg_sq]. torch counts the steps in a
        # float32 tensor and reads them back as a Python float; a float counts integers exactly up to 2^24.
        self.state: dict[int, list] = {}

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for index, parameter in enumerate(self.parameters):
            grad = parameter.grad
            if grad is None:  # torch skips it too, its step count included
                continue
            if index not in self.state:
                zeros = [torch.zeros_like(parameter, memory_format=torch.preserve_format) for _ in range(2)]
                self.state[index] = [0.0, *zeros]
            state = self.state[index]
            state[0] += 1.0
            steps, exp_avg, exp_avg_sq = state
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.learning_rate / (1 - beta1**steps)
            bias_correction2_sqrt = (1 - beta2**steps) ** 0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            parameter.addcdiv_(exp_avg, denom, value=-step_size)


class OnlineAdapter:
    def __init__(self, model, settings: AdaptSettings):
        self.model, self.settings = model, settings
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = CodecAdam(self.parameters, settings.learning_rate)

    def update(self, windows: list[list[int]]) -> float:
        """Take the configured steps on one round's windows (a right-padded batch); returns the last loss."""
        tokens = torch.full((len(windows), max(len(w) for w in windows)), PAD_ID, dtype=torch.long)
        for row, window in enumerate(windows):
            tokens[row, : len(window)] = torch.tensor(window, dtype=torch.long)
        padding = tokens == PAD_ID
        loss = 0.0
        self.model.eval()
        with torch.enable_grad():
            for _ in range(self.settings.steps_per_round):
                out = self.model(tokens, padding)
                self.optimizer.zero_grad()
                out.total_loss.backward()
                torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
                self.optimizer.step()
                loss = float(out.total_loss.detach())
        return loss
