"""The training pipeline: prepare_data -> stage1_pretrain -> stage2_top_lm -> evaluate -> promote.

Run parameters (kfp pipeline parameters): config name + overrides, data source, stage step counts, the gate rules
(one dict, `gate_rules`, validated by components/registry/gate_rules.py GateRules in the promote task),
registry model name, artifact root (empty: the cluster's ABSTRACTINATOR_ARTIFACT_ROOT). What the compiled YAML
asks of the cluster is fixed at compile time (`ClusterSettings`): the image, the GPUs, CPU and memory of each
task, retries and timeouts. Where things are (tracking server, S3 endpoint, region, artifact root) is not: every
task reads it at run time from the ConfigMap `abstractinator-pipeline-settings`, the S3 keys from the Secret
`abstractinator-s3` and MLflow's basic-auth credentials from the Secret `abstractinator-mlflow-auth` (env from
Secret references, never values), so one compiled pipeline runs on any cluster that has those objects
(manifests/). pipelines/task_runtime.py says what each task checks before it starts.

Every task runs with a writable scratch emptyDir as HOME, TMPDIR, the data home and every cache (the image's
working directory belongs to root and nothing is written there). Training and evaluation tasks: the GPUs (a
training task runs one trainer process per GPU, pipelines/torchrun.py), `/dev/shm` as a memory emptyDir (NCCL,
DataLoader workers), a timeout; the two training tasks also a retry policy (a retried stage resumes from its own
last checkpoint, pipelines/step_train.py). Caching is on for the tasks whose outputs are a pure function of their
inputs (both training stages and evaluation: config, overrides, step counts, data hash and the compiled code
identity are inputs) and off for those that read or write the registry (prepare_data's champion check, evaluation,
which scores the current champion beside the new model, and promote). A rerun of unchanged inputs therefore
reuses its trained results and evaluates them against whatever is champion now.

The evaluation's Ed25519 signing key (components/infrastructure/signing.py) is the Secret
`abstractinator-eval-signing-key`, mounted as a file into the evaluate task alone; every task may read the public
key from the ConfigMap's ABSTRACTINATOR_EVAL_PUBLIC_KEY (optional: without it no evidence verifies).

Scheduled retraining: prepare_data compares the data hash, code identity and config hash with the registry
champion's; when all three match, the rest of the pipeline is skipped (dsl.If) and nothing is registered.
"""

from kfp import dsl, kubernetes
from pydantic import BaseModel, ConfigDict, Field, field_validator

from components.infrastructure.signing import CLUSTER_PRIVATE_KEY_NAME, PRIVATE_KEY_ENV, PUBLIC_KEY_ENV
from components.registry.gate_rules import GateRules
from pipelines.kfp_tasks import make_tasks
from pipelines.step_table import RESULT_OUTPUT
from pipelines.task_runtime import REQUIRE_TRACKING_ENV, RUN_ID_ENV, RUN_ID_LABEL, SETTINGS_CONFIG_MAP, SETTINGS_KEYS

PIPELINE_NAME = "abstractinator-training"
# The `gate_rules` parameter's default: every rule, so the KFP UI shows each one and its value.
DEFAULT_GATE_RULES = GateRules().as_parameter()
DEFAULT_IMAGE = "ghcr.io/abstractinator/abstractinator:0.1.0"
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
MLFLOW_AUTH_KEYS = {
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
}
EVAL_KEY_MOUNT = "/var/run/secrets/abstractinator-eval"
EVAL_KEY_FILE = CLUSTER_PRIVATE_KEY_NAME  # the key `registry keygen` writes and the Secret holds
SCRATCH = "/scratch"
SCRATCH_ENV = {  # everything that would otherwise write under HOME, /tmp or the working directory
    "HOME": SCRATCH,
    "TMPDIR": SCRATCH,
    "XDG_CACHE_HOME": f"{SCRATCH}/.cache",
    "HF_HOME": f"{SCRATCH}/huggingface",
    "MPLCONFIGDIR": f"{SCRATCH}/.matplotlib",
    "ABSTRACTINATOR_DATA_HOME": f"{SCRATCH}/data",
}


RETRY_BACKOFF_S = 60  # wait before the first retry of a training task, doubling for each next one
RETRY_BACKOFF_FACTOR = 2


def retry_window_s(settings: "ClusterSettings") -> int:
    """The retry policy's backoff_max_duration of a training task: every attempt may run to its deadline, plus the
    backoffs between them. KFP 2.17.0 hands it to Argo as `retryStrategy.backoff.maxDuration`
    (kubeflow/pipelines backend/src/v2/compiler/argocompiler/container.go `getTaskRetryStrategyFromInput`), and
    Argo counts that from the first attempt's start: after it, no retry starts, and a retried pod's deadline is
    cut to it (argo-workflows v4.0.5, the version KFP 2.17.0's go.mod pins, workflow/controller/operator.go
    `processNodeRetries`). kfp's default, 3600 s, would end the retries of any training task that failed after
    its first hour."""
    retries = settings.training_retries
    backoffs = RETRY_BACKOFF_S * (RETRY_BACKOFF_FACTOR**retries - 1)  # 60 + 120 + 240 ... (Argo's formula)
    return (retries + 1) * settings.training_timeout_s + backoffs


def gpu_hours_bound(settings: "ClusterSettings") -> float:
    """The most GPU hours one run can hold when every attempt runs to its deadline and fails: each training task
    (retries + 1) x its deadline, the evaluation (never retried) its deadline, times the GPUs of each; prepare and
    promote use none, and a pod waiting out a backoff is gone (holds nothing). docs/cluster.md states it for the
    defaults."""
    attempts = settings.training_retries + 1
    seconds = 2 * attempts * settings.training_timeout_s + settings.evaluation_timeout_s
    return settings.gpus * seconds / 3600


class ClusterSettings(BaseModel):
    """Compile-time settings: what the compiled YAML asks of the cluster (not where its services are)."""

    model_config = ConfigDict(extra="forbid")

    image: str = DEFAULT_IMAGE
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu per training/eval task; 0 for CPU clusters.")
    cpu: str = Field("4", description="CPU request and limit of training/eval tasks.")
    memory: str = Field("16G", description="Memory request and limit of training/eval tasks.")
    light_cpu: str = Field("1", description="CPU of prepare_data and promote.")
    light_memory: str = Field("4G", description="Memory of prepare_data and promote.")
    settings_config_map: str | None = Field(SETTINGS_CONFIG_MAP, description="ConfigMap of run-time settings.")
    s3_secret: str | None = Field("abstractinator-s3", description="Secret with AWS_ACCESS_KEY_ID/SECRET; None: none.")
    mlflow_auth_secret: str | None = Field(
        "abstractinator-mlflow-auth",
        description="Secret with MLFLOW_TRACKING_USERNAME/PASSWORD (optional in the "
        "namespace: a tracking server without auth needs none); None: not referenced.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="Literal ABSTRACTINATOR_S3_ENDPOINT_URL, overriding the ConfigMap's (None: the ConfigMap decides).",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="Literal MLFLOW_TRACKING_URI, overriding the "
        "ConfigMap's (None: the ConfigMap decides). No credentials.",
    )
    gpu_node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels for GPU tasks.")
    training_retries: int = Field(3, ge=0, description="Retries of a failed training task (each resumes).")
    training_timeout_s: int = Field(24 * 3600, ge=1, description="activeDeadlineSeconds of a training task.")
    evaluation_timeout_s: int = Field(6 * 3600, ge=1, description="activeDeadlineSeconds of the evaluation.")
    shm_size: str = Field("8Gi", description="Size limit of the /dev/shm memory volume of GPU tasks.")
    scratch_size: str = Field("50Gi", description="Size limit of every task's scratch volume.")
    code_identity: str | None = Field(None, description="The code the image holds (default: this checkout's).")
    pipeline_root: str | None = Field(
        None,
        description="This pipeline's pipeline root, as the IR's defaultPipelineRoot. KFP 2.17's backend ignores "
        "that field (its root DAG driver takes the run's runtime pipeline root, else the kfp-launcher "
        "ConfigMap's: backend/src/v2/driver/root_dag.go), so `pipeline submit` and `schedule` send it as each "
        "run's pipeline root (pipelines/submission.py).",
    )
    eval_signing_secret: str | None = Field(
        "abstractinator-eval-signing-key",
        description=f"Secret whose `{EVAL_KEY_FILE}` is the evaluation's Ed25519 private key, mounted into the "
        "evaluate task alone; None: not mounted (the task then signs with a key of its own that no gate trusts).",
    )

    @field_validator("pipeline_root")
    @classmethod
    def _object_store_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("s3://", "gs://", "minio://")):
            raise ValueError(f"{value!r} is not an s3://, gs:// or minio:// URI")
        return value

    @field_validator("mlflow_tracking_uri", "s3_endpoint_url", "pipeline_root")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value and (urlsplit(value).username or urlsplit(value).password):
            raise ValueError(
                "must not hold credentials (user:password@): they would be written into the "
                "compiled YAML; put them in the Secret abstractinator-mlflow-auth"
            )
        return value


def _configure(task, settings: ClusterSettings, kind: str):
    """kind: 'light' (data, promote), 'training' (the two stages) or 'evaluation'."""
    heavy = kind != "light"
    # Evaluation reads the registry's champion (it scores it beside the challenger), so it is never cached.
    task.set_caching_options(kind == "training")
    if heavy:
        task.set_cpu_request(settings.cpu).set_cpu_limit(settings.cpu)
        task.set_memory_request(settings.memory).set_memory_limit(settings.memory)
        if settings.gpus > 0:
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(settings.gpus)
            for label, value in settings.gpu_node_selector.items():
                kubernetes.add_node_selector(task, label, value)
            kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=settings.shm_size
        )
        timeout = settings.training_timeout_s if kind == "training" else settings.evaluation_timeout_s
        kubernetes.set_timeout(task, timeout)
    else:
        task.set_cpu_request(settings.light_cpu).set_memory_request(settings.light_memory)
    if kind == "training" and settings.training_retries:
        task.set_retry(
            num_retries=settings.training_retries,
            backoff_duration=f"{RETRY_BACKOFF_S}s",
            backoff_factor=float(RETRY_BACKOFF_FACTOR),
            backoff_max_duration=f"{retry_window_s(settings)}s",
        )
    kubernetes.empty_dir_mount(task, volume_name="scratch", mount_path=SCRATCH, size_limit=settings.scratch_size)
    for name, value in SCRATCH_ENV.items():
        task.set_env_variable(name, value)
    if settings.settings_config_map:
        kubernetes.use_config_map_as_env(
            task,
            config_map_name=settings.settings_config_map,
            config_map_key_to_env={key: key for key in SETTINGS_KEYS},
        )
        kubernetes.use_config_map_as_env(  # the evaluation's public key: absent, no evidence verifies (fails closed)
            task,
            config_map_name=settings.settings_config_map,
            config_map_key_to_env={PUBLIC_KEY_ENV: PUBLIC_KEY_ENV},
            optional=True,
        )
        task.set_env_variable(REQUIRE_TRACKING_ENV, "1")
    if settings.s3_secret:
        kubernetes.use_secret_as_env(task, secret_name=settings.s3_secret, secret_key_to_env=S3_SECRET_KEYS)
    if settings.mlflow_auth_secret:
        kubernetes.use_secret_as_env(
            task, secret_name=settings.mlflow_auth_secret, secret_key_to_env=MLFLOW_AUTH_KEYS, optional=True
        )
    kubernetes.use_field_path_as_env(task, RUN_ID_ENV, f"metadata.labels['{RUN_ID_LABEL}']")
    if settings.s3_endpoint_url:
        task.set_env_variable("ABSTRACTINATOR_S3_ENDPOINT_URL", settings.s3_endpoint_url)
    if settings.mlflow_tracking_uri:
        task.set_env_variable("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    return task


def build_pipeline(settings: ClusterSettings | None = None, local: bool = False):
    """The pipeline function. `local`: for kfp.local (no platform settings: they would only warn; caching as
    compiled, which kfp.local honours when its cache is on)."""
    from components.infrastructure.provenance import code_identity as current_code

    settings = settings or ClusterSettings()
    steps = make_tasks(settings.image)
    code = settings.code_identity or current_code()

    def configure(task, kind: str):
        if local:
            return task.set_caching_options(kind == "training")
        return _configure(task, settings, kind)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Raw text to a gated model in the MLflow registry.",
        pipeline_root=settings.pipeline_root,
    )
    def training_pipeline(
        config: str = "ci",
        overrides: list = [],  # noqa: B006 (kfp reads defaults from the signature)
        data_source: str = "default",
        stage1_steps: int = 20,
        stage2_steps: int = 20,
        artifact_root: str = "",
        run_key: str = "",
        model_name: str = "abstractinator",
        gate_rules: dict = DEFAULT_GATE_RULES,  # noqa: B006 (every GateRules field; the promote task validates it)
        skip_if_unchanged: bool = True,
        include_eval_sets: bool = True,
        eval_tasks: list = [],  # noqa: B006
        eval_limit: int = 0,
        eval_max_bytes: int = 0,
        eval_canterbury: bool = True,
    ) -> str:
        run = dict(
            config=config,
            overrides=overrides,
            stage1_steps=stage1_steps,
            stage2_steps=stage2_steps,
            artifact_root=artifact_root,
            run_key=run_key,
            code_identity=code,
        )
        prepare = configure(
            steps.prepare_data(
                **run,
                data_source=data_source,
                model_name=model_name,
                skip_if_unchanged=skip_if_unchanged,
                include_eval_sets=include_eval_sets,
            ),
            "light",
        )
        # A task takes another step's result as the parameter named by that step (pipelines/kfp_tasks.py).
        prepared = dict(prepare_data=prepare.outputs[RESULT_OUTPUT])
        with dsl.If(prepare.outputs["Output"] == "retrain", name="data-code-or-config-changed"):
            stage1_run = {name: value for name, value in run.items() if name != "stage2_steps"}  # its cache key
            stage1 = configure(steps.stage1_pretrain(**stage1_run, **prepared), "training")
            stage2 = configure(
                steps.stage2_top_lm(
                    **run,
                    **prepared,
                    stage1_pretrain=stage1.outputs[RESULT_OUTPUT],
                    base_components=stage1.outputs["base_components"],
                ),
                "training",
            )
            evaluation = configure(
                steps.evaluate(
                    **run,
                    **prepared,
                    stage2_top_lm=stage2.outputs[RESULT_OUTPUT],
                    checkpoint=stage2.outputs["checkpoint"],
                    tasks=eval_tasks,
                    limit=eval_limit,
                    max_eval_bytes=eval_max_bytes,
                    canterbury=eval_canterbury,
                    model_name=model_name,
                ),
                "evaluation",
            )
            if not local and settings.eval_signing_secret:  # the signing key: this task alone mounts it
                kubernetes.use_secret_as_volume(
                    evaluation, secret_name=settings.eval_signing_secret, mount_path=EVAL_KEY_MOUNT
                )
                evaluation.set_env_variable(PRIVATE_KEY_ENV, f"{EVAL_KEY_MOUNT}/{EVAL_KEY_FILE}")
            configure(
                steps.promote(
                    **run,
                    **prepared,
                    stage1_pretrain=stage1.outputs[RESULT_OUTPUT],
                    stage2_top_lm=stage2.outputs[RESULT_OUTPUT],
                    evaluate=evaluation.outputs[RESULT_OUTPUT],
                    model_name=model_name,
                    checkpoint=stage2.outputs["checkpoint"],
                    image="" if local else settings.image,
                    gate_rules=gate_rules,
                ),
                "light",
            )
        return prepare.outputs["reason"]

    return training_pipeline


def compile_pipeline(out_file: str, settings: ClusterSettings | None = None) -> str:
    """Write the pipeline's IR YAML to `out_file`; returns the path."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(settings), package_path=str(out_file))
    return str(out_file)
