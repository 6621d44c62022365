"""The lm-eval adapter `hier_ae`: windows, exact 8.0 bits per byte for a uniform byte model through lm-eval,
loglikelihood against brute-force conditional code lengths, honest is_greedy, and generate_until's stops."""

from __future__ import annotations

import math

import pytest
import torch
from lm_eval.api.instance import Instance

from components.evaluation.conditional_code_length import HierarchicalAEScorer, ScoringWindow
from components.evaluation.hier_ae_lm import HierarchicalAELM, plan_windows
from components.evaluation.lm_eval_tasks import write_rolling_task
from model import build_model
from tests.model_helpers import real_text, text_windows, tiny_config, train
from tests.test_eval_conditional import brute_force_bits

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)

TEXT = real_text()


class UniformByteScorer:
    """Every byte costs log2(256) = 8 bits whatever the context; greedy output is a fixed cycle."""

    def __init__(self, max_length: int = 16, stream: bytes = b"abc, def. ghi"):
        self.max_length, self.stream = max_length, stream
        self.windows: list[ScoringWindow] = []

    def conditional_bits(self, windows):
        self.windows += windows
        return [8.0 * len(w.target) for w in windows]

    def greedy_continuation(self, context, at_start, max_bytes):
        return (self.stream * (max_bytes // len(self.stream) + 1))[:max_bytes]


def request(kind: str, *args) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


@pytest.fixture(scope="module")
def tiny_model():
    return build_model(tiny_config(num_levels=2, level_changes={"max_segment_len": 5})).eval()


@pytest.fixture(scope="module")
def trained_model():
    """Briefly trained, so that greedy text is mostly ASCII (an untrained model emits arbitrary bytes)."""
    torch.set_num_threads(1)
    model = build_model(tiny_config(num_levels=1))
    train(model, lambda step: (text_windows(64, 8, offset=step * 512), None), steps=60)
    return model.eval()


@pytest.mark.parametrize("context_length, target_length", [(0, 1), (0, 40), (5, 3), (30, 2), (100, 57), (3, 200)])
def test_windows_score_every_byte_once_with_the_text_just_before_as_context(context_length, target_length):
    context, target = TEXT[:context_length], TEXT[context_length : context_length + target_length]
    windows = plan_windows(context, target, max_length=16, stride=6)
    assert b"".join(w.target for w in windows) == target
    done = 0
    for window in windows:
        before = context + target[:done]
        assert len(window.context) + len(window.target) + window.at_start <= 16
        assert before.endswith(window.context)
        assert window.at_start == (window.context == before)  # BOS only when the context reaches the start
        done += len(window.target)
    first = windows[0]  # as much context as fits: a truncated context takes the place of BOS
    assert len(first.context) == min(len(context), 16 - len(first.target) - first.at_start)


def test_uniform_byte_model_scores_exactly_8_bits_per_byte_through_lm_eval(tmp_path, monkeypatch):
    import datasets.config
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")  # hermetic cache

    texts = [TEXT[:300].decode(), "short", TEXT[1000:1077].decode() + " \u00e9\u4e2d"]  # multi-byte UTF-8 too
    write_rolling_task("uniform_check", texts, tmp_path / "tasks")
    scorer = UniformByteScorer(max_length=16)
    results = lm_eval.simple_evaluate(
        model=HierarchicalAELM(scorer=scorer, stride=5),
        tasks=["uniform_check"],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
    )["results"]["uniform_check"]
    assert results["bits_per_byte,none"] == pytest.approx(8.0, abs=1e-12)
    assert results["byte_perplexity,none"] == pytest.approx(256.0, rel=1e-12)
    assert sum(len(w.target) for w in scorer.windows) == sum(len(t.encode()) for t in texts)
    assert max(len(w.context) + len(w.target) + w.at_start for w in scorer.windows) <= 16


def test_loglikelihood_equals_brute_force_conditional_code_length(tiny_model):
    scorer = HierarchicalAEScorer(tiny_model, torch.device("cpu"), max_length=128, batch_size=3)
    lm = HierarchicalAELM(scorer=scorer, greedy=False)
    pairs = [(TEXT[:cut].decode(), TEXT[cut : cut + n].decode()) for cut, n in [(0, 9), (11, 1), (23, 6), (40, 17)]]
    results = lm.loglikelihood([request("loglikelihood", c, t) for c, t in pairs])
    for (context, continuation), (logprob, greedy) in zip(pairs, results, strict=True):
        bits, _ = brute_force_bits(tiny_model, context.encode(), continuation.encode())
        assert logprob == pytest.approx(-bits * math.log(2), rel=1e-4)
        assert greedy is False  # greedy=0: not checked, reported False


def test_long_texts_are_scored_window_by_window(tiny_model):
    scorer = HierarchicalAEScorer(tiny_model, torch.device("cpu"), max_length=32, batch_size=4)
    lm = HierarchicalAELM(scorer=scorer, stride=10)
    text = TEXT[:100]
    (rolling,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", text.decode())])
    expected = sum(
        brute_force_bits(tiny_model, w.context, w.target)[0] if w.at_start else _unframed_bits(tiny_model, w)
        for w in plan_windows(b"", text, 32, 10)
    )
    assert len(plan_windows(b"", text, 32, 10)) > 3
    assert rolling == pytest.approx(-expected * math.log(2), rel=1e-4)


def _unframed_bits(model, window: ScoringWindow) -> float:
    from components.evaluation.conditional_code_length import conditional_bits_of_batch

    return conditional_bits_of_batch(model, [window], torch.device("cpu"))[0]


def test_is_greedy_is_true_exactly_for_the_greedy_continuation(trained_model):
    scorer = HierarchicalAEScorer(trained_model, torch.device("cpu"), max_length=128)
    lm = HierarchicalAELM(scorer=scorer)
    context = TEXT[:30]
    greedy = scorer.greedy_continuation(context, True, 12)
    assert len(greedy) == 12 and greedy.isascii()
    other_last = greedy[:-1] + (b"x" if greedy[-1:] != b"x" else b"y")
    other_first = (b"x" if greedy[:1] != b"x" else b"y") + greedy[1:]
    results = lm.loglikelihood(
        [
            request("loglikelihood", context.decode(), text.decode())
            for text in (greedy, other_last, other_first, greedy[:3])
        ]
    )
    assert [g for _, g in results] == [True, False, False, True]


def test_generate_until_returns_the_continuation_cut_before_the_first_stop_string():
    lm = HierarchicalAELM(scorer=UniformByteScorer())
    outputs = lm.generate_until(
        [
            request("generate_until", "prompt", {"until": [". ", ","], "max_gen_toks": 50}),
            request("generate_until", "prompt", {"until": ["zzz"], "max_gen_toks": 7}),
            request("generate_until", "prompt", {"until": "def", "max_gen_toks": 50}),
        ]
    )
    assert outputs == ["abc", "abc, de", "abc, "]


def test_generate_until_with_the_model_stops_at_a_stop_string(trained_model):
    scorer = HierarchicalAEScorer(trained_model, torch.device("cpu"), max_length=128)
    lm = HierarchicalAELM(scorer=scorer)
    context = TEXT[:25]
    free = scorer.greedy_continuation(context, True, 40)
    stop = next(chr(b) for b in free[5:] if b < 128)
    (output,) = lm.generate_until([request("generate_until", context.decode(), {"until": [stop], "max_gen_toks": 40})])
    assert output.encode() == free[: free.index(stop.encode())]
    assert len(output) < 40
    (capped,) = lm.generate_until([request("generate_until", context.decode(), {"until": [], "max_gen_toks": 9})])
    assert capped == free[:9].decode("utf-8", errors="replace")


def test_hier_ae_needs_a_checkpoint():
    from components.evaluation.evaluate import EvaluationError

    with pytest.raises(EvaluationError, match="checkpoint="):
        HierarchicalAELM()
