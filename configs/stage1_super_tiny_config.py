"""Two-stage workflow, stage 1: pretrain the super-tiny compressors and expanders with no top LM, then write
them to ./stage1_base.pt (which stage2_super_tiny_config.py loads via --load_base_from)."""

from configs.base_config import DEVICE, N_CPU
from configs.super_tiny_config import exp_config as super_tiny

# The seed's values, as a change to the super-tiny experiment (learning_rate and aux_lm_loss_weight restate it).
exp_config = super_tiny.updated(
    top_transformer_config=None,  # stage 1 trains the compressors and expanders only
    top_lm_loss_weight=0.0,  # no top LM to weigh
    save_base_components_path="./stage1_base.pt",  # what stage 2 loads with --load_base_from
    learning_rate=5e-4,
    batch_size=64,  # no top LM: four times the batch, without accumulation
    gradient_accumulation_steps=1,
    aux_lm_loss_weight=0.1,
)

__all__ = ["DEVICE", "N_CPU", "exp_config"]
