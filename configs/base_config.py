"""The seed's base experiment (configs/config.py is this config): a 33M-parameter one-level model.

Model and training values are the seed's (plus a max_segment_len bound, below), written in sections
(configs/schema.py says who reads each); the data source is the embedded public-domain corpus so it runs
anywhere. The seed trained on Hugging Face's fineweb-edu:
`--set data.dataset_name=hf:HuggingFaceFW/fineweb-edu --set data.dataset_config=sample-10BT` where the hub is
reachable.
"""

from configs.runtime import DEVICE, N_CPU
from configs.schema import (
    CheckpointConfig,
    CompressorLevelConfig,
    DataConfig,
    ExpConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    TopTransformerConfig,
    ValidationConfig,
)

exp_config = ExpConfig(
    model=ModelConfig(
        num_levels=1,
        compressor_level_configs=[
            CompressorLevelConfig(
                dim=256,
                heads=8,
                window=128,
                num_shared_encoder_layers=2,
                num_lm_encoder_layers=2,
                num_compression_encoder_layers=2,
                encoder_ffn_dim_multiplier=4,
                num_queries=1,
                codebook_size=4096,
                beta=1.0,
                vq_reset_interval=250,
                entropy_delta=0.2,
                entropy_abs_threshold=None,
                # Ours, not the seed's: at initialisation the entropy is flat, so without a bound each window is
                # one segment (one code for 1024 bytes) until the entropy model learns; 16 keeps segments short
                # from the first step (every seed config derives its level from this one).
                max_segment_len=16,
            )
        ],
        expander_dim_scale=1.0,
        expander_num_dec_layers=4,
        expander_heads_scale=1.0,
        expander_max_len=2048,
        aux_lm_loss_weight=1.0,
        top_lm_loss_weight=1.0,
        top_transformer_config=TopTransformerConfig(dim=384, num_layers=8, num_heads=12, ffn_dim_multiplier=4),
        use_continuous_expander_inputs=False,
    ),
    optim=OptimConfig(
        learning_rate=1e-4,
        num_epochs=1,
        max_steps=None,
        gradient_clip_norm=1.0,
        gradient_accumulation_steps=16,
        scheduler_type="cosine_with_min_lr",
        warmup_steps=1000,
        scheduler_specific_kwargs={"min_lr": 1e-6},
    ),
    data=DataConfig(
        dataset_name="default",
        dataset_config=None,
        dataset_train_split="train",
        text_column_name="text",
        sequence_length=1024,
        batch_size=16,
    ),
    checkpoint=CheckpointConfig(
        checkpoint_interval=1000,
        checkpoint_dir="./checkpoints",
        resume_from_checkpoint=None,
        save_base_components_path=None,
    ),
    validation=ValidationConfig(
        generation_interval=50,
        sample_prompt_for_generation="The purpose of education is ",
        generation_max_len_override=512,
    ),
    logging=LoggingConfig(
        run_name="HierarchicalAE_KPM_Run_v2",
        project_name="TemporalAutoencodedLanguageModelling",
        log_interval=1,
        mlflow_batch_interval=50,
    ),
)

__all__ = ["DEVICE", "N_CPU", "exp_config"]
