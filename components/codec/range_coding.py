"""Range coding of model distributions with `constriction`: the two ends of one channel.

Every symbol the codec sends is coded under one distribution given as fp32 logits (an expander's logits over a
level's vocabulary, or the top LM's logits over the codebook). Both ends turn the logits into integer
frequencies with model/code_length.py's `quantized_frequencies` (each symbol >= 1, summing to 2**24) and hand
those integers to constriction's range coder, which codes with exactly these frequencies (they are exact
multiples of its 24-bit precision, so its own rounding leaves them as they are; tests/test_codec_format.py
measures the size against the sum of -log2).

`stream` names which sequence a symbol belongs to (level index, or num_levels for the top codes): the encoder
draws the symbol it intends to send from that stream's queue; the decoder ignores it.
"""

from __future__ import annotations

from collections import deque

import constriction
import numpy as np
import torch

from model.code_length import PRECISION_BITS, quantized_frequencies

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def _frequencies(logits: torch.Tensor) -> np.ndarray:
    # float64 carries the integers exactly; one row per call.
    return quantized_frequencies(logits.detach().float().cpu().numpy()[None]).astype(np.float64)


class EncodingChannel:
    """Codes, for each request, the next intended symbol of its stream (or, if none is left, the most probable
    one: any choice decodes, since the decoder repeats the same requests)."""

    def __init__(self) -> None:
        self.encoder = constriction.stream.queue.RangeEncoder()
        self.intended: dict[int, deque[int]] = {}
        self.bits = 0.0  # sum of -log2 of the quantized probabilities coded: the ideal size of the output

    def code(self, stream: int, logits: torch.Tensor) -> int:
        frequencies = _frequencies(logits)
        queue = self.intended.get(stream)
        symbol = queue.popleft() if queue else int(frequencies[0].argmax())
        if not 0 <= symbol < frequencies.shape[1]:
            raise ValueError(f"symbol {symbol} outside the alphabet of stream {stream} ({frequencies.shape[1]})")
        self.encoder.encode(np.array([symbol], dtype=np.int32), _CATEGORICAL, frequencies)
        self.bits += PRECISION_BITS - float(np.log2(frequencies[0, symbol]))
        return symbol

    def finish(self) -> np.ndarray:
        """The compressed words (uint32) of everything coded so far; the channel starts empty again."""
        words = self.encoder.get_compressed()
        self.encoder = constriction.stream.queue.RangeEncoder()
        return words


class DecodingChannel:
    """Decodes each requested symbol from `words` under the same quantized distribution."""

    def __init__(self, words: np.ndarray):
        self.decoder = constriction.stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))

    def code(self, stream: int, logits: torch.Tensor) -> int:
        return int(self.decoder.decode(_CATEGORICAL, _frequencies(logits))[0])
