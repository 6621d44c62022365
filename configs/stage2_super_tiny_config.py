"""Two-stage workflow, stage 2: train the top LM on the frozen stage-1 base:
`python train.py --config configs/stage2_super_tiny_config.py --load_base_from ./stage1_base.pt`."""

from configs.base_config import DEVICE, N_CPU
from configs.super_tiny_config import exp_config as super_tiny

# The seed's values; each restates the super-tiny experiment's (stage 2 is that experiment on a frozen base).
exp_config = super_tiny.updated(
    top_lm_loss_weight=1.0,
    learning_rate=5e-4,
    batch_size=16,
    gradient_accumulation_steps=2,
    aux_lm_loss_weight=0.1,
)

__all__ = ["DEVICE", "N_CPU", "exp_config"]
