"""The seed's tiny experiment (12M parameters). The seed trained it on roneneldan/TinyStories:
`--set dataset_name=hf:roneneldan/TinyStories` where the hub is reachable; here it uses the embedded corpus."""

from configs.base_config import DEVICE, N_CPU
from configs.base_config import exp_config as base

# Every value below is the seed's tiny_config.py, written as a change to the base experiment.
exp_config = base.updated(
    compressor_level_configs=[  # narrower (128, not 256) with a smaller codebook: 12M parameters in all
        base.compressor_level_configs[0].updated(dim=128, heads=4, window=128, codebook_size=1024, beta=1.0)
    ],
    top_transformer_config=base.top_transformer_config.updated(dim=256, num_layers=8, num_heads=8),
    batch_size=64,  # a small model: larger batches, less accumulation (128 windows per step, not 256)
    gradient_accumulation_steps=2,
    learning_rate=1e-4,
    sample_prompt_for_generation="Once upon a time, in a land far, far away,",  # TinyStories-style text
)

__all__ = ["DEVICE", "N_CPU", "exp_config"]
