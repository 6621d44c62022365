"""Seed keys that act on nothing, mapped and dropped where a config is read, so that the schema
(configs/schema.py) holds only keys that act while the seed's config files, and checkpoints that still hold
these keys, load unchanged.

Each key's value is checked before it is dropped: the value the seed used (or any value, for a key that never
acted) goes with one log line; a value that would have meant something the code does not do is refused with
the reason, as a trap rather than a silent no-op (a model-level validator raises ValueError, which config
loading turns into a one-line ConfigError naming the field path).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# The byte vocabulary (256 bytes + BOS, EOS, PAD), owned by model/tokenizer.py; repeated here because configs
# must not import the model (imports point one way). tests/test_tokenizer.py checks they agree.
BYTE_VOCAB_SIZE = 259
BYTE_EOS_ID = 257


def _any(value: Any) -> bool:
    return True


# key -> (accepted value?, why it acts on nothing; what is refused otherwise)
SeedKeys = dict[str, tuple[Callable[[Any], bool], str]]

EXPERIMENT_SEED_KEYS: SeedKeys = {
    "initial_vocab_size": (
        lambda value: value == BYTE_VOCAB_SIZE,
        f"the byte vocabulary is fixed: 256 bytes, BOS, EOS, PAD; only {BYTE_VOCAB_SIZE} is accepted",
    ),
    "expander_eos_id": (
        lambda value: value == BYTE_EOS_ID,
        f"the expanders stop at the byte vocabulary's EOS, nothing else; only {BYTE_EOS_ID} is accepted",
    ),
    "use_decoder_only_expander": (
        lambda value: value is True,
        "the segment-aligned decoder-only expander is the one built; only true is accepted",
    ),
    "expander_num_enc_layers": (_any, "for the seed's seq2seq expander, which is not built"),
    "propagate_key_padding_mask": (
        lambda value: value is True,
        "padding is always masked (false fed padding to the model as content); only true is accepted",
    ),
}

LEVEL_SEED_KEYS: SeedKeys = {
    "max_seq_len_encoder": (_any, "RoPE has no length limit"),
    "target_compression_ratio": (
        lambda value: value is None,
        "the seed's compression-ratio penalty has no gradient and is not supported; steer compression with "
        "entropy_delta, min_segment_len and max_segment_len",
    ),
    "compression_loss_weight": (_any, "it weighted only the target ratio's penalty, which is not supported"),
}


def drop_seed_keys(data: Any, seed_keys: SeedKeys, where: str) -> Any:
    """`data` (a mapping about to be validated) without the seed keys of `seed_keys`, each checked first."""
    if not isinstance(data, dict) or not seed_keys.keys() & data.keys():
        return data
    kept = dict(data)
    dropped = []
    for key, (accepted, why) in seed_keys.items():
        if key not in kept:
            continue
        value = kept.pop(key)
        if not accepted(value):
            raise ValueError(f"{key}: {why} (got {value!r})")
        dropped.append(key)
    log.info("seed keys that act on nothing dropped from %s: %s", where, ", ".join(dropped))
    return kept
