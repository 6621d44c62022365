"""What every pipeline step is told (`RunSpec`: kfp parameters, CLI flags, params.yaml alike) and the prepared
data on this machine (`local_data`). Each step's job lives in its own module, named by pipelines/step_table.py:

    pipelines/step_prepare.py    prepare_data                   raw text -> shards; the champion check
    pipelines/step_train.py      stage1_pretrain, stage2_top_lm  one training stage into the run folder
    pipelines/step_evaluate.py   evaluate                       scored beside the champion, signed
    pipelines/step_promote.py    promote                        registered, gated

The kfp components (pipelines/kfp_tasks.py), `abstractinator pipeline step ...` and the dvc stages all call
those. Each step reads URIs (+ content hashes) and writes its artifacts under the run's folder of the
artifact root (an s3:// prefix or a local folder):

    <artifact_root>/data/<data_hash>/                   prepared shards + manifest (content addressed)
    <artifact_root>/runs/<stage1_key>/stage1/...        checkpoints, base_components.pt, curve.csv
    <artifact_root>/runs/<run_key>/stage2/...           checkpoints, curve.csv
    <artifact_root>/runs/<run_key>/eval/...             report.json, report.md, plots, metrics.json

Derived keys: stage 1's from what stage 1 trains (components/training/stages.py `stage1_key`), the run's from
both stages; a given run key names both folders.

The logic lives in components/ (prepare_data, train, evaluate, promote); the step modules only map a run's
settings onto those functions and move artifacts.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from components.infrastructure.provenance import code_identity, git_commit
from components.infrastructure.settings import get_settings
from components.training.stages import (
    StageConfigs,
    join_uri,
    load_pipeline_config,
    run_key,
    stage1_config,
    stage1_key,
    stage_configs,
)
from configs import ExpConfig
from pipelines import artifacts


class RunSpec(BaseModel):
    """What every step of one pipeline run is told (kfp parameters, CLI flags, params.yaml alike), and what follows
    from it, each computed once per spec: the loaded config (a config file is Python, run once), the code identity
    and git commit (each a git call), the stage configs and run folder of a data hash. Frozen, so that what was
    derived cannot go stale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str = Field("ci", description="Config name (configs/<name>_config.py) or path.")
    overrides: list[str] = Field(default_factory=list, description="key=value config overrides.")
    stage1_steps: int = Field(20, ge=1)
    stage2_steps: int | None = Field(
        20, ge=1, description="None where a step must not depend on it: the stage-1 task (KFP's cache key)."
    )
    artifact_root: str = Field("artifacts", description="s3://bucket/prefix or a local folder.")
    run_key: str | None = Field(None, description="Run folder name; None: derived from config, data, code.")

    _stages: dict[str, StageConfigs] = PrivateAttr(default_factory=dict)

    @cached_property
    def exp_config(self) -> ExpConfig:
        return load_pipeline_config(self.config, self.overrides)

    @cached_property
    def code_identity(self) -> str:
        return code_identity()

    @cached_property
    def git_commit(self) -> str:
        return git_commit()

    def stages(self, data_hash: str) -> StageConfigs:
        """Both stage configs of this run on the data `data_hash` (its keys derive from config, data, code)."""
        if self.stage2_steps is None:
            raise ValueError("this step was not given stage2_steps: it may ask for stage 1 only (stage1_config)")
        if data_hash not in self._stages:
            key = self.run_key or run_key(
                self.exp_config, self.stage1_steps, self.stage2_steps, data_hash, self.code_identity
            )
            self._stages[data_hash] = stage_configs(
                self.exp_config,
                self.stage1_steps,
                self.stage2_steps,
                self.artifact_root,
                key,
                self._stage1_key(data_hash),
            )
        return self._stages[data_hash]

    def stage1_config(self, data_hash: str) -> ExpConfig:
        """Stage 1's config on the data `data_hash`, which stage 2's settings do not change."""
        return stage1_config(self.exp_config, self.stage1_steps, self._stage1_root(data_hash))

    def _stage1_key(self, data_hash: str) -> str:
        return self.run_key or stage1_key(self.exp_config, self.stage1_steps, data_hash, self.code_identity)

    def _stage1_root(self, data_hash: str) -> str:
        return join_uri(self.artifact_root, "runs", self._stage1_key(data_hash))

    def run_root(self, data_hash: str) -> str:
        """<artifact_root>/runs/<run_key>: stage 2's and the evaluation's folder of this run on `data_hash`."""
        return self.stages(data_hash).run_root

    def stage_folder(self, data_hash: str, stage: str) -> str:
        """The folder a training stage writes ("stage1": under stage 1's own key; "stage2": the run folder)."""
        if stage == "stage1":
            return join_uri(self._stage1_root(data_hash), "stage1")
        return join_uri(self.run_root(data_hash), stage)


def _cache_dir(*parts: str) -> Path:
    path = get_settings().data_home / "pipeline-cache" / Path(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def local_data(data_uri: str, data_hash: str) -> Path:
    """Prepared data on this machine (fetched into the cache unless it already holds this data hash), verified:
    every file against the manifest, the manifest against `data_hash`."""
    from components.data.shards import ManifestError, verify

    if not artifacts.is_s3(data_uri):
        manifest = verify(Path(data_uri))
        if manifest.data_hash != data_hash:
            raise artifacts.StorageError(f"{data_uri}: holds data {manifest.data_hash}, expected {data_hash}")
        return Path(data_uri)
    directory = _cache_dir("data", data_hash)
    try:
        if verify(directory).data_hash == data_hash:
            return directory
    except ManifestError:
        pass
    artifacts.fetch_dir(data_uri, directory)
    manifest = verify(directory)
    if manifest.data_hash != data_hash:
        raise artifacts.StorageError(f"{data_uri}: holds data {manifest.data_hash}, expected {data_hash}")
    return directory
