"""How a token stream (BOS + bytes + EOS) is cut into windows of at most the model's sequence length, each
re-reading the last `context` tokens of the one before as known context: the plan the codec codes
(components/codec/window_coder.py) and the evaluation scores (components/evaluation/compression_eval.py), so
that the report's code length is measured on the codec's own windows. Pure integers; no torch."""

from __future__ import annotations

from collections.abc import Iterator

MAX_DEFAULT_CONTEXT = 16


def default_context(window: int, adapting: bool = False) -> int:
    """Known tokens each window re-reads unless told otherwise: an eighth of the window, at most 16 tokens (an
    eighth without the cap for a codec that adapts the model while it codes).

    Context lowers the expander's and entropy model's bits of the first tokens of a window, but every window
    boundary pays one extra top code (the previous window sent its last, cut-off segment; this one sends the whole
    segment again), more context means more windows, and the codec replays each known token as a decoding step.
    Measured (docs/evaluation.md): on a small trained model (tests/codec_helpers.py, window 64) an eighth was best;
    on the demo champion (window 256) 16 tokens coded four texts within -0.02% to +0.07% of 32's sizes in 16
    fewer steps per window. Adapting takes its optimizer steps once per round, and fewer, longer windows mean
    fewer rounds: there 16 tokens cost 0.65% (alice29, 52,903 bytes against 52,559)."""
    return window // 8 if adapting else min(window // 8, MAX_DEFAULT_CONTEXT)


def plan_windows(total_tokens: int, window: int, context: int) -> Iterator[tuple[int, int, int]]:
    """(start, known_end, end) of each window over a stream of total_tokens (BOS first)."""
    if window < 2 or not 0 <= context < window:
        raise ValueError(f"windows need 2 <= window and 0 <= context < window (got {window}, {context})")
    known_end, start = 1, 0
    while known_end < total_tokens:
        end = min(start + window, total_tokens)
        yield start, known_end, end
        known_end = end
        start = max(0, end - context)
