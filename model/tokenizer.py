"""The byte vocabulary: the one place that defines token ids.

Ids 0..255 are raw bytes, then three specials: BOS=256, EOS=257, PAD=258 (vocab 259). Every component
(expander start/stop, generation, data loader, lm-eval adapter) uses these constants. Any byte string,
invalid UTF-8 included, round-trips exactly through `encode` / `decode`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

NUM_BYTES = 256
BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
VOCAB_SIZE = 259


class ByteTokenizer:
    """Bytes <-> token ids. `str` input is UTF-8 encoded (lone surrogates via surrogateescape)."""

    bos_id = BOS_ID
    eos_id = EOS_ID
    pad_id = PAD_ID
    vocab_size = VOCAB_SIZE

    def encode(self, data: bytes | str, add_bos: bool = False, add_eos: bool = False) -> torch.Tensor:
        """Token ids (int64, shape [n]) for `data`, optionally framed by BOS/EOS."""
        raw = data.encode("utf-8", errors="surrogateescape") if isinstance(data, str) else bytes(data)
        ids = (
            torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int64)
            if raw
            else torch.empty(0, dtype=torch.int64)
        )
        parts = ([torch.tensor([BOS_ID])] if add_bos else []) + [ids] + ([torch.tensor([EOS_ID])] if add_eos else [])
        return torch.cat(parts)

    def decode(self, ids: torch.Tensor | Iterable[int], cut_at_eos: bool = True) -> bytes:
        """The bytes of `ids`: specials are dropped, and with `cut_at_eos` everything from the first EOS on."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if cut_at_eos and EOS_ID in values:
            values = values[: values.index(EOS_ID)]
        return bytes(v for v in values if 0 <= v < NUM_BYTES)

    def decode_text(self, ids: torch.Tensor | Iterable[int], cut_at_eos: bool = True, errors: str = "replace") -> str:
        """`decode` as text; invalid UTF-8 is replaced (for display), not dropped."""
        return self.decode(ids, cut_at_eos=cut_at_eos).decode("utf-8", errors=errors)
