"""Adaptive coding: fine-tune the model on the file while it is coded, identically at both ends.

After each window, encoder and decoder hold the same tokens (the window, known and new) and the same weights,
so both can take the same optimizer steps on it and code the next window with the updated model. The update
is the training loss (reconstruction + VQ commitment + auxiliary LM + top LM) in eval mode: the codebook's EMA
statistics and resets stay frozen, so the codes keep their meaning and no random number is drawn. On one CPU
thread in fp32 the forward, backward and Adam step are deterministic, so the two ends stay bit-identical (the
round-trip tests check it).
"""

from __future__ import annotations

import torch

from components.codec.file_format import AdaptSettings


class OnlineAdapter:
    def __init__(self, model, settings: AdaptSettings):
        self.model, self.settings = model, settings
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        # foreach=False: the plain per-tensor loop, the same arithmetic at both ends whatever the build prefers.
        self.optimizer = torch.optim.Adam(self.parameters, lr=settings.learning_rate, foreach=False)

    def update(self, tokens: list[int]) -> float:
        """Take the configured steps on one window of tokens (B=1); returns the last loss."""
        batch = torch.tensor([tokens], dtype=torch.long)
        loss = 0.0
        self.model.eval()
        with torch.enable_grad():
            for _ in range(self.settings.steps_per_window):
                out = self.model(batch)
                self.optimizer.zero_grad(set_to_none=True)
                out["total_loss"].backward()
                torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
                self.optimizer.step()
                loss = float(out["total_loss"].detach())
        return loss
