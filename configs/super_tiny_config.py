"""The seed's super-tiny experiment (4.8M parameters, continuous top LM). The seed trained it on
roneneldan/TinyStories (`--set dataset_name=hf:roneneldan/TinyStories`); here it uses the embedded corpus."""

from configs.base_config import DEVICE, N_CPU
from configs.base_config import exp_config as base

# Every value below is the seed's super_tiny_config.py, written as a change to the base experiment.
exp_config = base.updated(
    compressor_level_configs=[  # narrower, with a shorter attention window: 4.8M parameters in all
        base.compressor_level_configs[0].updated(dim=128, heads=8, window=64, codebook_size=2048, beta=1.0)
    ],
    expander_num_enc_layers=1,  # acts on nothing (configs/seed_keys.py); kept as the seed wrote it
    expander_num_dec_layers=1,
    top_transformer_config=base.top_transformer_config.updated(dim=128, num_layers=8, num_heads=8),
    aux_lm_loss_weight=0.1,  # the entropy branch's loss weighs less against reconstruction
    top_lm_loss_weight=1.0,
    learning_rate=5e-4,  # 5x the base's step for a model a seventh its size
    batch_size=16,
    gradient_accumulation_steps=2,
    sample_prompt_for_generation="Once upon a time, in a land far, far away,",
)

__all__ = ["DEVICE", "N_CPU", "exp_config"]
