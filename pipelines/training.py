"""The training pipeline: prepare_data -> stage1_pretrain -> stage2_top_lm -> evaluate -> promote.

Run parameters (kfp pipeline parameters): config name + overrides, data source, stage step counts, gate rules,
registry model name, artifact root (S3 prefix). Cluster settings are fixed at compile time (`ClusterSettings`):
the image, the GPU count of training/eval tasks (0 for CPU clusters), CPU/memory, the Kubernetes Secret whose
keys become AWS_* variables, and the endpoints the steps reach.

Scheduled retraining: prepare_data compares the data hash, git commit and config hash with the registry
champion's; when all three match, the rest of the pipeline is skipped (dsl.If) and nothing is registered.
"""



from kfp import dsl, kubernetes
from pydantic import BaseModel, ConfigDict, Field

from pipelines.components import make_components

PIPELINE_NAME = "abstractinator-training"
DEFAULT_IMAGE = "ghcr.io/abstractinator/abstractinator:0.1.0"
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}


class ClusterSettings(BaseModel):
    """Compile-time settings: what the compiled YAML asks of the cluster."""

    model_config = ConfigDict(extra="forbid")

    image: str = DEFAULT_IMAGE
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu per training/eval task; 0 for CPU clusters.")
    cpu: str = Field("4", description="CPU request and limit of training/eval tasks.")
    memory: str = Field("16G", description="Memory request and limit of training/eval tasks.")
    light_cpu: str = Field("1", description="CPU of prepare_data and promote.")
    light_memory: str = Field("4G", description="Memory of prepare_data and promote.")
    s3_secret: str | None = Field("abstractinator-s3", description="Secret with AWS_ACCESS_KEY_ID/SECRET; None: none.")
    s3_endpoint_url: str | None = Field(None, description="AWS_ENDPOINT_URL_S3 of every task (None: AWS).")
    mlflow_tracking_uri: str | None = Field(None, description="MLFLOW_TRACKING_URI of every task.")
    gpu_node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels for GPU tasks.")


def _configure(task, settings: ClusterSettings, heavy: bool):
    task.set_caching_options(False)  # every step reads or writes shared state (S3, the registry)
    if heavy:
        task.set_cpu_request(settings.cpu).set_cpu_limit(settings.cpu)
        task.set_memory_request(settings.memory).set_memory_limit(settings.memory)
        if settings.gpus > 0:
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(settings.gpus)
            if settings.gpu_node_selector:
                for label, value in settings.gpu_node_selector.items():
                    kubernetes.add_node_selector(task, label, value)
            kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    else:
        task.set_cpu_request(settings.light_cpu).set_memory_request(settings.light_memory)
    if settings.s3_secret:
        kubernetes.use_secret_as_env(task, secret_name=settings.s3_secret, secret_key_to_env=S3_SECRET_KEYS)
    if settings.s3_endpoint_url:
        task.set_env_variable("AWS_ENDPOINT_URL_S3", settings.s3_endpoint_url)
    if settings.mlflow_tracking_uri:
        task.set_env_variable("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    return task


def build_pipeline(settings: ClusterSettings | None = None, local: bool = False):
    """The pipeline function. `local`: for kfp.local (no platform settings: they would only warn)."""
    settings = settings or ClusterSettings()
    steps = make_components(settings.image)

    def configure(task, heavy: bool):
        if local:
            return task.set_caching_options(False)
        return _configure(task, settings, heavy)

    @dsl.pipeline(name=PIPELINE_NAME, description="Raw text to a gated model in the MLflow registry.")
    def training_pipeline(
        config: str = "ci",
        overrides: list = [],  # noqa: B006 (kfp reads defaults from the signature)
        data_source: str = "default",
        stage1_steps: int = 20,
        stage2_steps: int = 20,
        artifact_root: str = "s3://abstractinator/pipeline",
        run_key: str = "",
        model_name: str = "abstractinator",
        gate_metric: str = "test_bits_per_byte",
        min_improvement: float = 0.01,
        max_bits_per_byte: float = 8.0,
        min_live_code_share: float = 0.0,
        skip_if_unchanged: bool = True,
        include_eval_sets: bool = True,
        eval_tasks: list = [],  # noqa: B006
        eval_limit: int = 0,
        eval_max_bytes: int = 0,
        eval_canterbury: bool = True,
    ) -> str:
        run = dict(config=config, overrides=overrides, stage1_steps=stage1_steps, stage2_steps=stage2_steps,
                   artifact_root=artifact_root, run_key=run_key)
        prepare = configure(steps.prepare_data(
            **run, data_source=data_source, model_name=model_name, skip_if_unchanged=skip_if_unchanged,
            include_eval_sets=include_eval_sets,
        ), heavy=False)
        data = dict(data_uri=prepare.outputs["data_uri"], data_hash=prepare.outputs["data_hash"])
        with dsl.If(prepare.outputs["Output"] == "retrain", name="data-code-or-config-changed"):
            stage1 = configure(steps.stage1_pretrain(**run, **data), heavy=True)
            stage2 = configure(steps.stage2_top_lm(
                **run, **data, base_components_uri=stage1.outputs["base_components_uri"],
                base_components_hash=stage1.outputs["base_components_hash"],
            ), heavy=True)
            evaluation = configure(steps.evaluate(
                **run, **data, checkpoint_uri=stage2.outputs["checkpoint_uri"],
                checkpoint_hash=stage2.outputs["checkpoint_hash"], tasks=eval_tasks, limit=eval_limit,
                max_eval_bytes=eval_max_bytes, canterbury=eval_canterbury,
            ), heavy=True)
            configure(steps.promote(
                **run, model_name=model_name, checkpoint_uri=stage2.outputs["checkpoint_uri"],
                checkpoint_hash=stage2.outputs["checkpoint_hash"], metrics=evaluation.outputs["metrics"],
                data_hash=prepare.outputs["data_hash"], report_uri=evaluation.outputs["report_uri"],
                gate_metric=gate_metric, min_improvement=min_improvement, max_bits_per_byte=max_bits_per_byte,
                min_live_code_share=min_live_code_share,
            ), heavy=False)
        return prepare.outputs["reason"]

    return training_pipeline


def compile_pipeline(out_file: str, settings: ClusterSettings | None = None) -> str:
    """Write the pipeline's IR YAML to `out_file`; returns the path."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(settings), package_path=str(out_file))
    return str(out_file)
