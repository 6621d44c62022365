"""The `make demo` experiment: one level and a discrete top LM, sized so that the whole pipeline (prepare,
stage 1, stage 2, evaluate, promote) finishes in minutes on two CPU cores.

Tuned with bench/quality.py (docs/benchmarks.md, ablations). At this budget the top LM predicts the next code
little better than its frequency, so a code costs about log2(codebook_size) bits, more than the bytes it saves
the expander: the fewer codes the better (256 -> 16 -> 4 -> 2 each helped), and the expander does most of the
modelling, starting from its compressor's entropy-model state (`expander_reads_lm_state`), the largest gain
in these ablations. The top LM also reads the pooled vectors of past segments and a learned log prior per code, each
worth a little on frozen codes."""

from configs.base_config import DEVICE, N_CPU
from configs.schema import CompressorLevelConfig, ExpConfig, TopTransformerConfig

exp_config = ExpConfig(
    run_name="demo",
    project_name="abstractinator-demo",
    num_levels=1,
    compressor_level_configs=[
        CompressorLevelConfig(
            dim=128,
            heads=4,
            window=64,
            num_shared_encoder_layers=1,
            num_lm_encoder_layers=2,
            num_compression_encoder_layers=1,
            encoder_ffn_dim_multiplier=3,
            codebook_size=2,
            beta=0.25,
            vq_reset_interval=25,
            entropy_delta=0.3,
            min_segment_len=2,
            max_segment_len=12,
        )
    ],
    expander_num_dec_layers=2,
    expander_max_len=1024,
    expander_reads_lm_state=True,
    aux_lm_loss_weight=1.0,
    top_lm_loss_weight=1.0,
    top_transformer_config=TopTransformerConfig(
        dim=128,
        num_layers=3,
        num_heads=4,
        ffn_dim_multiplier=3,
        continuous=False,
        pooled_inputs=True,
        code_bias=True,
    ),
    learning_rate=2e-3,
    batch_size=16,
    sequence_length=256,
    gradient_accumulation_steps=1,
    warmup_steps=30,
    max_steps=300,
    scheduler_specific_kwargs={"min_lr": 1e-4},
    checkpoint_interval=100,
    checkpoint_dir="./checkpoints/demo",
    generation_interval=100,
    generation_max_len_override=64,
    validation_interval=100,
    validation_max_bytes=65_536,
    mlflow_batch_interval=25,
)

__all__ = ["DEVICE", "N_CPU", "exp_config"]
