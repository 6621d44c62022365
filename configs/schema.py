"""The experiment config schema: one strict pydantic model per concept, the experiment in sections.

`ExpConfig` is sectioned by the package that reads each key (as torchtitan's JobConfig and BLT's args are):

- `model` (ModelConfig): levels, expanders, top LM, loss weights, the attention kernel; build_model reads only
  this section (model/autoencoder.py).
- `optim` (OptimConfig): learning rate, schedule, clipping, accumulation, weight decay, steps and epochs; the
  optimizer and scheduler are built from it alone (components/training/optimization.py).
- `data` (DataConfig): the source, the prepared shards, and the windows (sequence_length, batch_size), which the
  data loaders, evaluation and the codec read.
- `checkpoint` (CheckpointConfig): interval, folder, resume, stage 1's base components, how many to keep.
- `validation` (ValidationConfig): the validation passes and the generated samples during training.
- `logging` (LoggingConfig): run and project names, metric and MLflow intervals.
- `seed` and `device` stay at the top: every package reads them.

A field keeps its seed name inside its section (`optim.learning_rate`). Every config written flat (the seed's
files, older YAML/JSON, the `exp_config` of older checkpoints) still loads: a `mode="before"` validator moves
each flat key to its section (`FLAT_KEY_SECTIONS`, derived from the sections' fields), and refuses a key given both flat
and in its section. Every model forbids unknown keys, so a typo fails at load time naming the field path (e.g.
`model.compressor_level_configs.0.codebook_size`). Dict-style access (`exp_config['optim']['max_steps']`)
works through `DictAccess`.

Seed keys that act on nothing are not fields: configs/seed_keys.py checks and drops them before validation
(with a log line), so the seed's files still load and the schema holds only keys that act.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from configs.flat_keys import sectioned
from configs.seed_keys import EXPERIMENT_SEED_KEYS, LEVEL_SEED_KEYS, drop_seed_keys

SchedulerType = Literal["cosine_with_min_lr", "cosine", "linear", "constant", "constant_with_warmup"]


TOP_STATE_NEEDS_JOINT = (
    "expander_reads_top_state needs the joint workflow (top LM and expanders trained together): stage 1 has no "
    "top LM and stage 2 freezes the expander that reads it"
)


class DictAccess(BaseModel):
    """Strict model with the seed's dict-style access: cfg['key'], cfg['key'] = v (validated), cfg.get, as_dict."""

    # allow_inf_nan=False: `--set learning_rate=.inf` (or a NaN anywhere) would otherwise train to NaN weights
    # and report success; every float field, nested ones and dict values included, must be finite.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True, allow_inf_nan=False)

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in type(self).model_fields:
            raise KeyError(f"{type(self).__name__} has no key {key!r}")
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in type(self).model_fields

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in type(self).model_fields else default

    def updated(self, **changes: Any) -> Any:
        """A validated copy with `changes` applied (validated together, so their order does not matter)."""
        return type(self).model_validate({**self.as_dict(), **changes})

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON types only): what checkpoints, MLflow params and YAML files hold."""
        return self.model_dump(mode="json")


class CompressorLevelConfig(DictAccess):
    """One compression level: encoder transformer, entropy segmentation, segment pooling, vector quantizer."""

    dim: int = Field(256, gt=0, description="Model width D of this level.")
    heads: int = Field(8, gt=0, description="Attention heads (encoder layers and the pooler).")
    window: int = Field(128, gt=0, description="Sliding attention window: position t sees t-window..t.")
    num_encoder_layers: int = Field(2, ge=0, description="Depth of each branch whose own count (below) is None.")
    num_shared_encoder_layers: int = Field(2, ge=0, description="Trunk layers shared by both branches.")
    num_lm_encoder_layers: int | None = Field(
        2, ge=0, description="Entropy/LM branch depth; None -> num_encoder_layers."
    )
    num_compression_encoder_layers: int | None = Field(
        2, ge=0, description="Compression branch depth; None -> num_encoder_layers."
    )
    encoder_ffn_dim_multiplier: float = Field(4, gt=0, description="SwiGLU hidden width = dim * this.")
    num_queries: int = Field(1, gt=0, description="Learned queries (pooled vectors) per segment.")
    codebook_size: int = Field(4096, ge=2, description="Codes K in this level's vector quantizer.")
    beta: float = Field(1.0, ge=0, description="VQ commitment weight.")
    vq_reset_interval: int = Field(250, gt=0, description="Steps between dead-code reset checks.")
    vq_decay: float = Field(0.99, gt=0, lt=1, description="EMA decay of the codebook statistics.")
    entropy_delta: float = Field(
        0.2, ge=0, description="Nats: a segment starts where entropy rises by more than this over t-1."
    )
    entropy_abs_threshold: float | None = Field(
        None, gt=0, description="Nats: a segment also starts where entropy exceeds this (None: off)."
    )
    min_segment_len: int = Field(1, ge=1, description="No segment is shorter (except a text's last).")
    max_segment_len: int | None = Field(
        None, ge=1, description="A segment is cut after this many positions (None: unbounded)."
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_seed_keys(cls, data: Any) -> Any:
        return drop_seed_keys(data, LEVEL_SEED_KEYS, "a compressor level")

    @model_validator(mode="after")
    def _check_shapes(self) -> CompressorLevelConfig:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.max_segment_len is not None and self.max_segment_len < self.min_segment_len:
            raise ValueError(
                f"max_segment_len ({self.max_segment_len}) is below min_segment_len ({self.min_segment_len})"
            )
        return self

    @property
    def lm_layers(self) -> int:
        return self.num_encoder_layers if self.num_lm_encoder_layers is None else self.num_lm_encoder_layers

    @property
    def compression_layers(self) -> int:
        if self.num_compression_encoder_layers is None:
            return self.num_encoder_layers
        return self.num_compression_encoder_layers


class TopTransformerConfig(DictAccess):
    """The top LM (CodeSequenceTransformer) over the top level's code vectors."""

    embed_dim: int | None = Field(
        None, gt=0, description="Seed key; the input width is the top level's dim, so it must equal it if set."
    )
    dim: int = Field(384, gt=0)
    num_layers: int = Field(8, ge=1)
    num_heads: int = Field(12, gt=0)
    ffn_dim_multiplier: float = Field(4, gt=0)
    continuous: bool = Field(
        True, description="True: predict the next vector (MSE). False: logits over codes (CE), gives bits."
    )
    code_bias: bool = Field(False, description="Add a learned log prior per code to the code logits.")
    initial_inverse_temperature: float = Field(
        1.0, gt=0, description="Start of the code logits' learned inverse temperature (sharper: larger)."
    )
    pooled_inputs: bool = Field(
        False,
        description="Also read the pooled (pre-VQ) vectors of past segments, which a decoder recomputes from "
        "the bytes it has decoded (model/top_lm.py).",
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> TopTransformerConfig:
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        return self


class ModelConfig(DictAccess):
    """What build_model reads (model/autoencoder.py): levels, expanders, the top LM, loss weights, kernels."""

    num_levels: int = Field(1, ge=1)
    compressor_level_configs: list[CompressorLevelConfig] = Field(default_factory=lambda: [CompressorLevelConfig()])
    expander_dim_scale: float = Field(1.0, gt=0, description="Expander width = level dim * this.")
    expander_num_dec_layers: int = Field(4, ge=1)
    expander_heads_scale: float = Field(1.0, gt=0, description="Expander heads = level heads * this.")
    expander_max_len: int = Field(2048, gt=0, description="Cap on generated positions per expander call.")
    aux_lm_loss_weight: float = Field(1.0, ge=0, description="Weight of the entropy branch's next-token loss.")
    top_lm_loss_weight: float = Field(1.0, ge=0)
    top_transformer_config: TopTransformerConfig | None = Field(default_factory=TopTransformerConfig)
    use_continuous_expander_inputs: bool = Field(
        False,
        description="Ablation: expanders read pre-VQ vectors while training; evaluation and every code "
        "length read the quantized ones (what a receiver holds).",
    )
    cross_lookback: int = Field(
        1, ge=0, description="Expander cross-attention sees its own segment's code and this many before."
    )
    expander_reads_lm_state: bool = Field(
        False,
        description="Each expander also reads its compressor's entropy-model state at the previous position "
        "(a decoder computes it anyway, from the tokens it has decoded, to recompute the boundaries).",
    )
    expander_reads_top_state: bool = Field(
        False,
        description="The top level's expander also reads the top LM's state for each position's segment (the "
        "state that predicts the segment's first code), and its loss trains the top LM through it. Needs the "
        "joint workflow: stage 1 has no top LM and stage 2 freezes the expander.",
    )
    attention_backend: Literal["block", "flex"] = Field(
        "block", description="Sliding-window kernel: block-local SDPA (any device) or FlexAttention (CUDA)."
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        if self.num_levels != len(self.compressor_level_configs):
            raise ValueError(
                f"num_levels ({self.num_levels}) must equal the number of compressor_level_configs "
                f"({len(self.compressor_level_configs)})"
            )
        top = self.top_transformer_config
        if top is None and self.top_lm_loss_weight > 0:
            raise ValueError("top_lm_loss_weight > 0 needs a top_transformer_config (set the weight to 0.0)")
        if self.expander_reads_top_state and top is None:
            raise ValueError(TOP_STATE_NEEDS_JOINT)
        top_dim = self.compressor_level_configs[-1].dim
        if top is not None and top.embed_dim is not None and top.embed_dim != top_dim:
            raise ValueError(
                f"top_transformer_config.embed_dim ({top.embed_dim}) must equal the top level's dim ({top_dim})"
            )
        return self

    @property
    def has_code_length(self) -> bool:
        """A top LM of either kind gives the top codes probabilities (model/top_lm.py), so texts have bits."""
        return self.top_transformer_config is not None

    @property
    def has_discrete_top_lm(self) -> bool:
        return self.top_transformer_config is not None and not self.top_transformer_config.continuous


class OptimConfig(DictAccess):
    """The optimizer, its schedule and the loop's length (components/training/optimization.py, train.py)."""

    learning_rate: float = Field(1e-4, gt=0)
    num_epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Stops at whichever of this and num_epochs ends first.")
    gradient_clip_norm: float = Field(1.0, ge=0, description="0 disables clipping.")
    gradient_accumulation_steps: int = Field(16, ge=1)
    scheduler_type: SchedulerType = "cosine_with_min_lr"
    warmup_steps: int = Field(1000, ge=0)
    scheduler_specific_kwargs: dict[str, float] = Field(default_factory=lambda: {"min_lr": 1e-6})
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay; never on norms, biases, embeddings.")


class DataConfig(DictAccess):
    """Where the bytes come from and the windows they are cut into (components/data/); evaluation and the codec
    window texts by the same sequence_length."""

    dataset_name: str = Field(
        "default",
        description="'default' (embedded corpus), a local path or glob, s3://bucket/prefix, or a Hugging Face "
        "dataset name (hf:org/name).",
    )
    dataset_config: str | None = None
    dataset_train_split: str = "train"
    text_column_name: str = "text"
    data_dir: str | None = Field(
        None, description="Prepared shards (prepare-data output); None: the default corpus, prepared on first use."
    )
    sequence_length: int = Field(1024, ge=2, description="Tokens per window: training, validation, evaluation.")
    batch_size: int = Field(16, gt=0, description="Windows per micro-batch (per process).")


class CheckpointConfig(DictAccess):
    """Saving and resuming (components/training/checkpoints.py, train.py)."""

    checkpoint_interval: int = Field(1000, gt=0)
    checkpoint_dir: str = Field("./checkpoints", description="Local path or s3://bucket/prefix.")
    resume_from_checkpoint: str | None = None
    save_base_components_path: str | None = Field(
        None, description="Stage 1: write compressors+expanders here after training."
    )
    keep_last_checkpoints: int = Field(3, ge=1)


class ValidationConfig(DictAccess):
    """Validation passes and generated samples during training (components/training/validation.py)."""

    validation_interval: int = Field(500, gt=0, description="Steps between validation passes.")
    validation_max_bytes: int = Field(262_144, gt=0, description="Bytes of the val split per validation pass.")
    generation_interval: int = Field(50, gt=0)
    sample_prompt_for_generation: str = "The purpose of education is "
    generation_max_len_override: int = Field(512, gt=0)


class LoggingConfig(DictAccess):
    """Run names and metric records (components/infrastructure/tracking.py, components/training/train_metrics.py)."""

    run_name: str = "HierarchicalAE_KPM_Run_v2"
    project_name: str | None = "TemporalAutoencodedLanguageModelling"
    mlflow_batch_interval: int = Field(50, gt=0, description="Metrics are sent to MLflow in batches of this.")
    log_interval: int = Field(1, gt=0, description="Steps between metric records.")


class ExpConfig(DictAccess):
    """A whole experiment, in sections (see the module docstring); `seed` and `device` act everywhere."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    seed: int = Field(0, description="Seeds parameters init, data order and sampling.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda if available, else cpu.")

    @model_validator(mode="before")
    @classmethod
    def _read_flat_keys(cls, data: Any) -> Any:
        """Seed keys checked and dropped, then each flat key moved to its section (configs/flat_keys.py)."""
        data = drop_seed_keys(data, EXPERIMENT_SEED_KEYS, "the experiment")
        return sectioned(data, FLAT_KEY_SECTIONS) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check_consistency(self) -> ExpConfig:
        if self.model.expander_reads_top_state and self.checkpoint.save_base_components_path:
            raise ValueError(TOP_STATE_NEEDS_JOINT)
        return self

    def __getattr__(self, name: str) -> Any:
        # Read-only flat names (`base.compressor_level_configs`, `cfg['max_steps']`) for config files written
        # against the flat schema, the seed's configs/*tiny*.py among them, which must load unchanged. Our code
        # reads the sectioned names; only names the table knows resolve, anything else fails as before.
        section = FLAT_KEY_SECTIONS.get(name)
        if section is None:
            return super().__getattr__(name)
        return getattr(getattr(self, section), name)

    def __getitem__(self, key: str) -> Any:
        section = FLAT_KEY_SECTIONS.get(key)
        return super().__getitem__(key) if section is None else getattr(self, section)[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in FLAT_KEY_SECTIONS else super().get(key, default)

    def updated(self, **changes: Any) -> ExpConfig:
        """A validated copy with `changes` applied, as a delta: flat keys (`max_steps=3`) go to their section,
        and a section given as a mapping (`optim={"max_steps": 3}`) changes only the keys it names."""
        data = self.as_dict()
        for key, value in sectioned(changes, FLAT_KEY_SECTIONS).items():
            if key in SECTIONS and isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return type(self).model_validate(data)


# The sections and each flat key's section, derived from the section models' own fields (no list to keep in step).
SECTIONS = tuple(
    name
    for name, field in ExpConfig.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, DictAccess)
)
FLAT_KEY_SECTIONS = {
    key: section for section in SECTIONS for key in ExpConfig.model_fields[section].annotation.model_fields
}
if len(FLAT_KEY_SECTIONS) != sum(len(ExpConfig.model_fields[section].annotation.model_fields) for section in SECTIONS):
    raise TypeError("two ExpConfig sections share a field name: a flat config could not say which one it sets")
