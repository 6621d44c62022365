"""The `make demo` experiment: one level and a discrete top LM, sized so that the whole pipeline (prepare,
stage 1, stage 2, evaluate, promote) finishes in minutes on two CPU cores.

Written as a delta on the CI config (configs/ci_config.py), section by section: the same shape (one level, a
discrete top LM), with each changed value's reason beside it. Tuned with bench/quality.py (docs/benchmarks.md,
ablations). At this budget the top LM predicts the next code little better than its frequency, so a code costs
about log2(codebook_size) bits, more than the bytes it saves the expander: the fewer codes the better (256 -> 16
-> 4 -> 2 each helped), and the expander does most of the modelling, starting from its compressor's
entropy-model state (`expander_reads_lm_state`), the largest gain in these ablations. The top LM also reads the
pooled vectors of past segments and a learned log prior per code, each worth a little on frozen codes."""

from configs.base_config import DEVICE, N_CPU
from configs.ci_config import exp_config as ci

exp_config = ci.updated(
    model={
        "compressor_level_configs": [
            ci.model.compressor_level_configs[0].updated(
                dim=128,  # minutes, not seconds, of CPU: a wider and deeper level (sizes kept from the tuning)
                window=64,  # with sequence_length, twice CI's
                num_lm_encoder_layers=2,
                encoder_ffn_dim_multiplier=3,
                codebook_size=2,  # a code costs ~log2(codebook_size) bits here: 256 -> 16 -> 4 -> 2 each helped
                vq_reset_interval=25,  # scaled with the run (300 steps, not 50)
                entropy_delta=0.3,  # kept from the tuning; other values not measured (docs/benchmarks.md)
                min_segment_len=2,  # longer segments: fewer codes to pay for (docs/benchmarks.md, segment bounds)
            )
        ],
        "expander_num_dec_layers": 2,  # the expander does most of the modelling (docs/benchmarks.md)
        "expander_max_len": 1024,
        "expander_reads_lm_state": True,  # the largest gain of the ablations: expander 1.895 -> 1.406 bits/byte
        "top_transformer_config": ci.model.top_transformer_config.updated(
            dim=128,
            num_layers=3,
            ffn_dim_multiplier=3,
            pooled_inputs=True,  # reads past segments' pooled vectors: worth a little on frozen codes
            code_bias=True,  # a learned log prior per code: 7.463 -> 7.329 bits per top code on frozen codes
        ),
    },
    optim={
        "warmup_steps": 30,  # a tenth of the run, as CI's 5 of 50
        "max_steps": 300,
    },
    data={
        "batch_size": 16,  # longer, larger batches: the demo budget allows them, CI's 20 steps do not
        "sequence_length": 256,
    },
    checkpoint={
        "checkpoint_interval": 100,  # checkpoints, samples, validation and MLflow batches scaled to the longer run
        "checkpoint_dir": "./checkpoints/demo",
    },
    validation={
        "generation_interval": 100,
        "generation_max_len_override": 64,
        "validation_interval": 100,
        "validation_max_bytes": 65_536,
    },
    logging={
        "run_name": "demo",  # its own runs, checkpoints and registered model
        "project_name": "abstractinator-demo",
        "mlflow_batch_interval": 25,
    },
)

__all__ = ["DEVICE", "N_CPU", "exp_config"]
