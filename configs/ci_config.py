"""The CI experiment: one small level and a discrete top LM (so code lengths are in bits), small enough that
a 20-step run takes seconds on two CPU cores. Used by tests, `dvc repro` checks and the pipeline tests.

Written as a delta on the base experiment (configs/base_config.py), section by section, with each changed
value's reason beside it; everything not named here is the base's."""

from configs.base_config import DEVICE, N_CPU
from configs.base_config import exp_config as base

exp_config = base.updated(
    model={
        "compressor_level_configs": [
            base.model.compressor_level_configs[0].updated(
                dim=64,  # seconds, not hours, of CPU: a quarter of the base's width, one layer per branch
                heads=4,  # 16 dimensions per head, as the base's 256/8 has 32: enough for a 64-wide level
                window=32,  # a quarter of sequence_length, as the base's 128 of 1024 is an eighth
                num_shared_encoder_layers=1,
                num_lm_encoder_layers=1,
                num_compression_encoder_layers=1,
                encoder_ffn_dim_multiplier=2,
                codebook_size=64,  # a 50-step run uses few codes; 4096 would stay mostly dead
                beta=0.25,  # a lighter commitment pull while the codebook moves fast over a short run
                vq_reset_interval=5,  # dead-code resets within a 50-step run (250 would never fire)
                max_segment_len=12,  # a few segments per 32-token window from the first step
            )
        ],
        "expander_num_dec_layers": 1,  # as the encoder: one layer keeps a step in milliseconds
        "expander_max_len": 256,  # twice a CI window is enough for every generated sample
        "top_transformer_config": base.model.top_transformer_config.updated(
            dim=64,  # the top LM as small as the level it reads
            num_layers=2,
            num_heads=4,
            ffn_dim_multiplier=2,
            continuous=False,  # code logits: code lengths in bits, which evaluation and the gate need
        ),
    },
    optim={
        "learning_rate": 2e-3,  # a tiny model over 50 steps: a large step, decayed to min_lr
        "gradient_accumulation_steps": 1,  # one micro-batch per step: the run is about steps, not batch size
        "warmup_steps": 5,  # a tenth of the run
        "max_steps": 50,
        "scheduler_specific_kwargs": {"min_lr": 1e-4},  # the base's ratio (1/100) to the larger learning rate
    },
    data={
        "sequence_length": 128,  # short windows and batches: a step takes milliseconds on a CPU
        "batch_size": 8,
    },
    checkpoint={
        "checkpoint_interval": 10,  # a few checkpoints within the run, so resuming is exercised
        "checkpoint_dir": "./checkpoints/ci",  # its own folder: never resumes from another experiment's
    },
    validation={
        "validation_interval": 25,  # twice per run
        "validation_max_bytes": 16_384,  # a CI validation pass takes a second, not minutes
        "generation_interval": 25,
        "generation_max_len_override": 32,  # a short sample is enough to see it decodes
    },
    logging={
        "run_name": "ci",  # its own runs and registered model
        "project_name": "abstractinator-ci",
        "mlflow_batch_interval": 10,  # the run has 50 steps: batches of 50 would send metrics once
    },
)

__all__ = ["DEVICE", "N_CPU", "exp_config"]
