"""Range coding of model distributions with `constriction`: the two ends of one channel.

Every symbol the codec sends is coded under one distribution given as fp32 logits (an expander's logits over a
level's vocabulary, or the top LM's logits over the codebook). Both ends turn the logits into integer
frequencies with model/code_length.py's `quantized_frequencies` (each symbol >= 1, summing to 2**24) and hand
those integers to constriction's range coder. Its fast model (`Categorical(perfect=False)`) re-quantizes the
table on the way in: large frequencies move by a few units of 2**-24, but a symbol at the minimum frequency 1
may get more (so the output can be slightly smaller than the sum of -log2 of our frequencies when the model is
often very surprised). Both ends hand it the same integers, so they code under the same table whatever it
does; `perfect=True` would keep the table exactly but costs ~400x more time per symbol.
tests/test_codec_format.py measures the size against the sum of -log2.

A request codes the symbols of several rows (the codec's streams) at once, each under its own distribution: one
constriction call with an array of symbols and a matrix of frequencies. `stream` names which sequence the
symbols belong to (level index, or num_levels for the top codes): the encoder draws the symbol it intends to
send for each row from that row's queue of that stream; the decoder ignores it.
"""

from __future__ import annotations

from collections import deque

import constriction
import numpy as np
import torch

from model.code_length import PRECISION_BITS, quantized_frequencies

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def _frequencies(logits: torch.Tensor) -> np.ndarray:
    # float64 carries the integers exactly; one row per symbol.
    return quantized_frequencies(logits.detach().float().cpu().numpy()).astype(np.float64)


class EncodingChannel:
    """Codes, for each requested row, the next intended symbol of its stream (or, if none is left, the most
    probable one: any choice decodes, since the decoder repeats the same requests)."""

    def __init__(self) -> None:
        self.encoder = constriction.stream.queue.RangeEncoder()
        self.intended: dict[int, dict[int, deque[int]]] = {}  # stream -> row -> symbols
        self.bits = 0.0  # sum of -log2 of the quantized probabilities coded: the ideal size of the output

    def code(self, stream: int, rows: list[int], logits: torch.Tensor) -> list[int]:
        frequencies = _frequencies(logits)
        queues = self.intended.get(stream, {})
        symbols = np.array(
            [queues[row].popleft() if queues.get(row) else int(frequencies[i].argmax()) for i, row in enumerate(rows)],
            dtype=np.int32,
        )
        if ((symbols < 0) | (symbols >= frequencies.shape[1])).any():
            raise ValueError(f"a symbol outside the alphabet of stream {stream} ({frequencies.shape[1]})")
        self.encoder.encode(symbols, _CATEGORICAL, frequencies)
        chosen = frequencies[np.arange(len(rows)), symbols]
        self.bits += float((PRECISION_BITS - np.log2(chosen)).sum())
        return symbols.tolist()

    def finish(self) -> np.ndarray:
        """The compressed words (uint32) of everything coded so far; the channel starts empty again."""
        words = self.encoder.get_compressed()
        self.encoder = constriction.stream.queue.RangeEncoder()
        return words


class DecodingChannel:
    """Decodes each requested row's symbol from `words` under the same quantized distributions."""

    def __init__(self, words: np.ndarray):
        self.decoder = constriction.stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))

    def code(self, stream: int, rows: list[int], logits: torch.Tensor) -> list[int]:
        return self.decoder.decode(_CATEGORICAL, _frequencies(logits)).tolist()
