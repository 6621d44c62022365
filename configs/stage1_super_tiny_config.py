"""Two-stage workflow, stage 1: pretrain the super-tiny compressors and expanders with no top LM, then write
them to ./stage1_base.pt (which stage2_super_tiny_config.py loads via --load_base_from)."""

from configs.base_config import DEVICE, N_CPU
from configs.super_tiny_config import exp_config as super_tiny

exp_config = super_tiny.updated(
    top_transformer_config=None,
    top_lm_loss_weight=0.0,
    save_base_components_path="./stage1_base.pt",
    learning_rate=5e-4,
    batch_size=64,
    gradient_accumulation_steps=1,
    aux_lm_loss_weight=0.1,
)

__all__ = ["DEVICE", "N_CPU", "exp_config"]
