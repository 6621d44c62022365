"""Which prepared data a training run reads: `--data DIR`, else the config's `data_dir`, else the config's
`dataset_name` prepared on first use under the data home (the embedded default corpus unless told otherwise)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from components.data.data_sources import DataSourceError
from components.data.prepare_data import PrepareDataParams, ensure_prepared, prepare_data
from components.data.shards import MANIFEST_NAME, verify
from components.infrastructure.settings import get_settings
from configs import ExpConfig


def prepared_dir_for(source: str) -> Path:
    """A stable folder name per source under the data home, e.g. prepared/hf-roneneldan-TinyStories-1a2b3c4d."""
    settings = get_settings()
    if source == "default":
        return settings.default_prepared_dir
    slug = re.sub(r"[^A-Za-z0-9]+", "-", source).strip("-")[:60]
    return settings.data_home / "prepared" / f"{slug}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"


def resolve_training_data(config: ExpConfig, data_dir: str | Path | None = None) -> Path:
    """A directory of prepared shards for this run. An explicit directory (`--data`, or the config's data_dir)
    must hold a manifest and verify: it is never prepared into or replaced by another corpus. Without one, the
    config's dataset is prepared under the data home (idempotent)."""
    chosen = data_dir or config.data.data_dir
    if chosen:
        directory = Path(chosen)
        if not (directory / MANIFEST_NAME).is_file():
            what = "no such folder" if not directory.exists() else f"no {MANIFEST_NAME}, so not prepared data"
            raise DataSourceError(
                f"{directory}: {what}; prepare it first with `abstractinator prepare-data --source SOURCE --out "
                f"{directory}`, or leave out --data to use the config's dataset_name ({config.data.dataset_name!r})"
            )
        verify(directory)
        return directory
    directory = prepared_dir_for(config.data.dataset_name)
    if config.data.dataset_name == "default":
        return ensure_prepared(directory)
    prepare_data(
        PrepareDataParams(
            source=config.data.dataset_name,
            out_dir=directory,
            text_column=config.data.text_column_name,
            hf_config=config.data.dataset_config,
            hf_split=config.data.dataset_train_split,
        )
    )
    return directory
