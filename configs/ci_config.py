"""The CI experiment: one small level and a discrete top LM (so code lengths are in bits), small enough that
a 20-step run takes seconds on two CPU cores. Used by tests, `dvc repro` checks and the pipeline tests."""

from configs.base_config import DEVICE, N_CPU
from configs.schema import CompressorLevelConfig, ExpConfig, TopTransformerConfig

exp_config = ExpConfig(
    run_name="ci",
    project_name="abstractinator-ci",
    num_levels=1,
    compressor_level_configs=[
        CompressorLevelConfig(
            dim=64,
            heads=4,
            window=32,
            num_shared_encoder_layers=1,
            num_lm_encoder_layers=1,
            num_compression_encoder_layers=1,
            encoder_ffn_dim_multiplier=2,
            codebook_size=64,
            beta=0.25,
            vq_reset_interval=5,
            entropy_delta=0.2,
            min_segment_len=1,
            max_segment_len=12,
        )
    ],
    expander_num_dec_layers=1,
    expander_max_len=256,
    aux_lm_loss_weight=1.0,
    top_lm_loss_weight=1.0,
    top_transformer_config=TopTransformerConfig(
        dim=64, num_layers=2, num_heads=4, ffn_dim_multiplier=2, continuous=False
    ),
    learning_rate=2e-3,
    batch_size=8,
    sequence_length=128,
    gradient_accumulation_steps=1,
    warmup_steps=5,
    max_steps=50,
    scheduler_specific_kwargs={"min_lr": 1e-4},
    checkpoint_interval=10,
    checkpoint_dir="./checkpoints/ci",
    generation_interval=25,
    generation_max_len_override=32,
    sample_prompt_for_generation="The purpose of education is ",
    validation_interval=25,
    validation_max_bytes=16_384,
    mlflow_batch_interval=10,
)

__all__ = ["DEVICE", "N_CPU", "exp_config"]
