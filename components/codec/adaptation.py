"""Adaptive coding: fine-tune the model on the file while it is coded, identically at both ends.

After each round (one window of every stream, components/codec/files.py), encoder and decoder hold the same
tokens (the windows, known and new) and the same weights, so both can take the same optimizer steps on them (one
batch) and code the next round with the updated model. The update
is the training loss (reconstruction + VQ commitment + auxiliary LM + top LM) in eval mode: the codebook's EMA
statistics and resets stay frozen, so the codes keep their meaning and no random number is drawn. On one CPU
thread in fp32 the forward, backward and Adam step are deterministic, so the two ends stay bit-identical (the
round-trip tests check it).
"""

from __future__ import annotations

import torch

from components.codec.file_format import AdaptSettings
from model.tokenizer import PAD_ID


class OnlineAdapter:
    def __init__(self, model, settings: AdaptSettings):
        self.model, self.settings = model, settings
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        # foreach=False: the plain per-tensor loop, the same arithmetic at both ends whatever the build prefers.
        self.optimizer = torch.optim.Adam(self.parameters, lr=settings.learning_rate, foreach=False)

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
                self.optimizer.zero_grad(set_to_none=True)
                out.total_loss.backward()
                torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
                self.optimizer.step()
                loss = float(out.total_loss.detach())
        return loss
