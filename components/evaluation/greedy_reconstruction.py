"""Greedy reconstruction of the compression report's first windows from their top codes, all rows in lockstep.

`model.decompress` (model/generation.py) decodes one row at a time; the report decodes a few windows per text,
and on CPU that step-by-step decoding was half of an evaluation's time (docs/benchmarks.md, evaluation). This
drives the codec's lockstep decoder (model/lockstep_decoding.py) with the same greedy choices, so every row
advances in one model call per step:

- level 0: argmax of the byte logits with PAD excluded (padding is never content), other levels: argmax
  (generation.py `LevelDecoder.choose_token` at temperature 0);
- a row ends at its EOS (kept), at max_len, or when it opens a segment whose top code it does not have: the
  lockstep top source asks the chooser for a code only when a row's known codes are used up, which is where
  generation.py's `TopCodeSource` returns None and the row stops without that step's token.
"""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import torch

from model.eval_mode import eval_mode
from model.lockstep_decoding import lockstep_chain
from model.tokenizer import EOS_ID, PAD_ID


@torch.inference_mode()
def greedy_reconstruction(
    model, top_codes: torch.Tensor, top_valid: torch.Tensor, max_len: int, stop: threading.Event | None = None
) -> torch.Tensor:
    """Greedy bytes (B, T) from top codes (B, N) with valid rows `top_valid`, padded with PAD: the same rows as
    `model.decompress(top_codes, top_valid, max_len)`. When `stop` is set (the caller failed or was interrupted
    while this ran in a worker thread), raises CancelledError at the next step."""
    rows = top_codes.shape[0]
    codes = {row: top_codes[row][top_valid[row]].tolist() for row in range(rows)}
    ran_out: set[int] = set()

    def choose(stream: int, asking: list[int], logits: torch.Tensor) -> list[int]:
        if stream == model.num_levels:  # a top code past the known ones: those rows end here
            ran_out.update(asking)
        elif stream == 0:
            logits = logits.clone()
            logits[:, PAD_ID] = float("-inf")
        return logits.argmax(-1).tolist()

    with eval_mode(model):
        decoder = lockstep_chain(
            model, {row: [[] for _ in range(model.num_levels)] for row in range(rows)}, codes, choose, max_len
        )
        out: list[list[int]] = [[] for _ in range(rows)]
        active = [row for row in range(rows) if max_len > 0]
        while active:
            if stop is not None and stop.is_set():
                raise CancelledError("greedy reconstruction stopped")
            tokens = decoder.next_tokens(active)
            still = []
            for row in active:
                if row in ran_out:
                    continue
                out[row].append(tokens[row])
                if tokens[row] != EOS_ID and len(out[row]) < max_len:
                    still.append(row)
            active = still
    width = max([1] + [len(row) for row in out])
    result = torch.full((rows, width), PAD_ID, dtype=torch.long)
    for row, tokens in enumerate(out):
        result[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return result.to(top_codes.device)
