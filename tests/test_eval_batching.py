"""The compression report's batched work (issue 25): each window's bits are the same whether it is scored
alone or beside others in a padded batch, and equal the conditional code length of that window alone; the
lockstep greedy reconstruction gives the bytes of the one-row decoder (model.decompress), also when the windows
of several texts are decoded together."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import CancelledError

import pytest
import torch

import components.evaluation.compression_eval as compression_eval
from components.evaluation.compression_eval import evaluate_compression, evaluate_compressions, text_windows
from components.evaluation.conditional_code_length import conditional_bits_of_tokens
from components.evaluation.greedy_reconstruction import greedy_reconstruction
from components.evaluation.ordered_threads import Workers
from model import build_model
from model.tokenizer import BOS_ID, EOS_ID, PAD_ID
from model.window_plan import default_context, plan_windows
from tests.model_helpers import padded_batch, real_text, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)

SEQUENCE_LENGTH = 64
CPU = torch.device("cpu")
DATA = real_text()[:700]  # 702 tokens: the last window is short, so a batch of 8 pads it


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_config(num_levels=2, level_changes={"max_segment_len": 5})).eval()


def report(model, batch_size: int) -> dict:
    return evaluate_compression(model, text_windows(DATA, SEQUENCE_LENGTH, batch_size), CPU, reconstruction_windows=0)


def test_a_batch_of_eight_gives_each_window_the_bits_it_gets_in_a_batch_of_one(model):
    """Batch neighbours do not leak into a window (both pad to the sequence length; the unpadded reference is
    the test below)."""
    alone, batched = report(model, 1), report(model, 8)
    assert len(batched["window_bits"]) > 8 and len(batched["window_bits"]) % 8  # a padded last batch
    # Same bytes exactly; the bits to fp32 rounding (another batch shape sums in another order, ~1e-8 relative).
    assert [count for count, _ in batched["window_bits"]] == [count for count, _ in alone["window_bits"]]
    assert [bits for _, bits in batched["window_bits"]] == pytest.approx([b for _, b in alone["window_bits"]], rel=1e-6)
    assert batched["bytes"] == alone["bytes"] == len(DATA)
    assert batched["bits"] == pytest.approx(alone["bits"], rel=1e-6)
    assert batched["segment_lengths"] == alone["segment_lengths"]  # counted per row within a batch


def test_window_bits_are_the_conditional_code_length_of_each_window_alone(model):
    """The per-window reference: conditional_code_length's own path, one unpadded window per pass."""
    stream = [BOS_ID, *DATA, EOS_ID]
    windows = list(plan_windows(len(stream), SEQUENCE_LENGTH, default_context(SEQUENCE_LENGTH)))
    expected = [
        conditional_bits_of_tokens(model, [(stream[start:end], known_end - start)], CPU)[0]
        for start, known_end, end in windows
    ]
    got = report(model, 8)["window_bits"]
    sent_bytes = [sum(token < 256 for token in stream[known_end:end]) for _, known_end, end in windows]
    assert [int(count) for count, _ in got] == sent_bytes
    assert [bits for _, bits in got] == pytest.approx(expected, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("levels, pad_favoured", [(1, False), (2, False), (1, True)])
def test_lockstep_reconstruction_gives_the_bytes_of_the_one_row_decoder(levels, pad_favoured):
    """Rows whose top codes run out early (each valid prefix shorter) and rows cut at max_len, bytes equal;
    `pad_favoured`: PAD's byte logit is twice the most chosen byte's, so PAD is the argmax where both skip it."""
    model = build_model(tiny_config(num_levels=levels, level_changes={"max_segment_len": 5})).eval()
    if pad_favoured:
        head = model.expanders[0].head.weight
        with torch.no_grad():
            head[PAD_ID] = 2 * head[ord(" ")]
    tokens, padding = padded_batch([DATA[:60], DATA[100:140], DATA[200:260], DATA[300:310]])
    compressed = model.compress(tokens, padding)
    top_valid = compressed.top_valid.clone()
    for row, keep in enumerate([None, 3, 1, None]):
        if keep is not None:
            top_valid[row, keep:] = False
    endings = []
    for max_len in (tokens.shape[1], 12):
        expected = model.decompress(compressed.top_codes, top_valid, max_len=max_len)
        got = greedy_reconstruction(model, compressed.top_codes, top_valid, max_len)
        assert torch.equal(got, expected)
        endings.append((expected != PAD_ID).sum(1).tolist())
    assert len(set(endings[0])) > 1 and min(endings[0]) < tokens.shape[1]  # codes ran out at different steps
    assert 12 in endings[1]  # and rows were cut at max_len


def test_texts_scored_together_report_what_each_reports_alone(model):
    """Reconstruction windows of all texts are decoded in one pass: each text keeps its own numbers."""
    texts = {"a": DATA, "b": real_text()[2000:2150], "c": real_text()[5000:5040]}
    together = evaluate_compressions(model, {k: text_windows(v, SEQUENCE_LENGTH, 2) for k, v in texts.items()}, CPU, 3)
    for name, data in texts.items():
        alone = evaluate_compression(model, text_windows(data, SEQUENCE_LENGTH, 2), CPU, 3)
        assert together[name] == alone
    assert together["c"]["reconstruction"]["windows"] == 1 and together["a"]["reconstruction"]["windows"] == 3
    assert len({entry["reconstruction"]["exact_match_bytes"] for entry in together.values()}) == 3


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_a_texts_batch_count_is_known_before_scoring_and_equals_the_batches_built(batch_size):
    """The progress bar's total (evaluate.py) comes from len(), which no longer rebuilds the window plan."""
    batches = text_windows(DATA, SEQUENCE_LENGTH, batch_size)
    built = list(batches)
    assert len(batches) == len(built) and sum(len(b["tokens"]) for b in built) == len(batches.windows)
    assert len(list(batches)) == len(built)  # iterable again: each pass builds the batches anew


def test_the_remembered_baselines_are_not_changed_through_a_report(model):
    first = report(model, 8)
    first["baselines"]["xz"] = -1.0
    assert report(model, 8)["baselines"]["xz"] > 0


def test_two_worker_threads_give_the_one_worker_report_to_the_byte(model):
    """Batches scored by two threads side by side, accumulated in order: the report JSON's sha256 is the
    one-worker report's (every window's bits, every statistic, the reconstruction)."""
    texts = {"a": DATA, "b": real_text()[2000:2600], "c": real_text()[5000:5040]}

    def report_sha256(workers: int) -> str:
        batches = {name: text_windows(data, SEQUENCE_LENGTH, 2) for name, data in texts.items()}
        reports = evaluate_compressions(model, batches, CPU, 3, workers=workers)
        return hashlib.sha256(json.dumps(reports, sort_keys=True).encode()).hexdigest()

    assert report_sha256(2) == report_sha256(1)


def test_two_workers_decode_the_reconstruction_while_later_batches_are_scored(model, monkeypatch):
    """The reconstruction is a worker's job from the moment every text's windows to decode are known (the last
    text's first batch), not a serial tail after the last batch."""
    scored, seen_at_start = [], []
    forward, reconstruct = compression_eval._forward, compression_eval._reconstruct
    monkeypatch.setattr(compression_eval, "_forward", lambda *args: scored.append(1) or forward(*args))
    monkeypatch.setattr(
        compression_eval, "_reconstruct", lambda *args: seen_at_start.append(len(scored)) or reconstruct(*args)
    )
    texts = {"a": DATA, "b": real_text()[2000:5000]}
    batches = {name: text_windows(data, SEQUENCE_LENGTH, 2) for name, data in texts.items()}
    total = sum(len(text) for text in batches.values())
    evaluate_compressions(model, batches, CPU, 3, workers=2)
    assert len(seen_at_start) == 1 and seen_at_start[0] < total - 10  # b's first batches, and the ones queued ahead


def test_the_default_worker_count_is_torchs_thread_count(model, monkeypatch):
    """Without `workers`, the batches are scored by as many threads as torch had before the evaluation took it
    down to one (the evaluation step passes no count)."""
    import threading

    import components.evaluation.compression_eval as compression_eval

    threads, forward = set(), compression_eval._forward
    monkeypatch.setattr(compression_eval, "_forward", lambda *a: threads.add(threading.current_thread()) or forward(*a))
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        evaluate_compressions(model, {"a": text_windows(DATA, SEQUENCE_LENGTH, 1)}, CPU, 0)
    finally:
        torch.set_num_threads(previous)
    assert len(threads) == 2 and threading.main_thread() not in threads


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_stops_the_reconstruction_at_its_next_step(model, workers):
    """A failure (or Ctrl-C) in the scoring loop sets the workers' stop, which the greedy reconstruction reads at
    each step: the error is not held up by a reconstruction nobody will read."""
    codes, valid = torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool)
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        greedy_reconstruction(model, codes, valid, 8, stop)

    seen = []

    def long_job(pool):
        deadline = time.monotonic() + 30
        while not pool.stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(pool.stop.is_set())

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="scoring failed"):
        with Workers(workers) as pool:
            if workers > 1:
                pool.submit(long_job, pool)
            raise RuntimeError("scoring failed")
    assert time.monotonic() - started < 10
    assert pool.stop.is_set() and seen == ([True] if workers > 1 else [])
