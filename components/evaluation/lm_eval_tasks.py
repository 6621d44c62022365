"""Local lm-eval tasks: the standard tasks over the offline data of eval_data.py, as `<task>_local`.

    <tasks_dir>/<task>_local.yaml      include: <installed lm_eval>/tasks/.../<task>.yaml (absolute path)
                                       task: <task>_local, dataset_path: arrow|json, dataset_name: null,
                                       dataset_kwargs.data_files: {<split>: <absolute data file>}
    <tasks_dir>/lambada_openai.jsonl   lambada requests (context + continuation) rewritten as {"text": ...}

Run lm-eval with `--include_path <tasks_dir>` (and HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1). The stock YAML
keeps the prompts, targets and metrics, so a local task scores exactly what the hub task scores, on the split
that ships offline (validation; lambada: its test requests). A `loglikelihood_rolling` bits-per-byte task over
any local texts is written by `write_rolling_task`.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
from pathlib import Path

from components.data.eval_data import LM_EVAL_TASK_FILES

DEFAULT_TASKS = ("lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge", "openbookqa", "winogrande")
LOCAL_SUFFIX = "_local"

# task -> (stock YAML relative to lm_eval/tasks, the split lm-eval reads, extra overrides)
_STOCK = {
    "lambada_openai": ("lambada/lambada_openai.yaml", "test", {}),
    "hellaswag": ("hellaswag/hellaswag.yaml", "validation", {}),
    "piqa": ("piqa/piqa.yaml", "validation", {}),
    "winogrande": ("winogrande/default.yaml", "validation", {}),
    "arc_easy": ("arc/arc_easy.yaml", "validation", {"tag": [], "test_split": None}),
    "arc_challenge": ("arc/arc_easy.yaml", "validation", {"tag": [], "test_split": None}),
    "openbookqa": ("openbookqa/openbookqa.yaml", "validation", {"test_split": None}),
}


def lm_eval_tasks_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def hub_offline() -> bool:
    """The Hugging Face hub is off limits (the local tasks are the ones that can run)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """The Hugging Face hub answers a TCP connection (a quick check before lm-eval would retry for minutes)."""
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def localize_task_names(tasks: list[str], offline: bool) -> tuple[list[str], list[str]]:
    """Standard task names mapped to their local versions when offline; returns (tasks, names that changed)."""
    if not offline:
        return list(tasks), []
    mapped, changed = [], []
    for task in tasks:
        if task in _STOCK:
            mapped.append(task + LOCAL_SUFFIX)
            changed.append(task)
        else:
            mapped.append(task)
    return mapped, changed


def _yaml(mapping: dict) -> str:
    # JSON is YAML: quoting every string this way keeps paths and Jinja templates intact.
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in mapping.items())


def convert_lambada(requests_file: Path, out_file: Path) -> Path:
    """olmo lambada requests (context, continuation) -> JSON lines {"text": context + continuation}."""
    lines = []
    with gzip.open(requests_file, "rt", encoding="utf-8") as handle:
        for line in handle:
            request = json.loads(line)["request"]
            lines.append(json.dumps({"text": request["context"] + request["continuation"]}))
    data = ("\n".join(lines) + "\n").encode()
    if not (out_file.is_file() and out_file.read_bytes() == data):
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_bytes(data)
    return out_file


def write_local_tasks(lm_eval_data_dir: Path, tasks_dir: Path) -> dict[str, Path]:
    """One `<task>_local.yaml` per standard task whose data is under lm_eval_data_dir; returns {task: yaml}."""
    lm_eval_data_dir, tasks_dir = Path(lm_eval_data_dir).resolve(), Path(tasks_dir).resolve()
    tasks_dir.mkdir(parents=True, exist_ok=True)
    root = lm_eval_tasks_root()
    written = {}
    for task, (stock, split, extra) in _STOCK.items():
        data_file = lm_eval_data_dir / LM_EVAL_TASK_FILES[task]
        if not data_file.is_file():
            continue
        if task == "lambada_openai":
            data_file = convert_lambada(data_file, tasks_dir / "lambada_openai.jsonl")
        fields = {
            "include": str(root / stock),
            "task": task + LOCAL_SUFFIX,
            "dataset_path": "json" if data_file.suffix == ".jsonl" else "arrow",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {split: str(data_file)}},
            "training_split": None,
            **extra,
        }
        path = tasks_dir / f"{task}{LOCAL_SUFFIX}.yaml"
        path.write_text(_yaml(fields))
        written[task + LOCAL_SUFFIX] = path
    return written


def write_rolling_task(name: str, texts: list[str], tasks_dir: Path) -> Path:
    """A bits-per-byte task `name` (loglikelihood_rolling over each text) like lm-eval's wikitext task."""
    tasks_dir = Path(tasks_dir).resolve()
    tasks_dir.mkdir(parents=True, exist_ok=True)
    data_file = tasks_dir / f"{name}.jsonl"
    data_file.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    fields = {
        "task": name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "output_type": "loglikelihood_rolling",
        "test_split": "test",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": metric} for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
        "metadata": {"version": 1.0},
    }
    path = tasks_dir / f"{name}.yaml"
    path.write_text(_yaml(fields))
    return path
