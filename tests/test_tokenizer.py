"""The byte vocabulary: exact round trips for any bytes, and one set of special ids."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from configs.seed_keys import BYTE_EOS_ID, BYTE_VOCAB_SIZE
from model.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, ByteTokenizer

tokenizer = ByteTokenizer()


@given(st.binary(max_size=512))
def test_any_bytes_round_trip_exactly(data: bytes) -> None:
    ids = tokenizer.encode(data, add_bos=True, add_eos=True)
    assert ids.dtype == torch.int64
    assert ids[0].item() == BOS_ID and ids[-1].item() == EOS_ID
    assert len(ids) == len(data) + 2
    assert tokenizer.decode(ids) == data


@given(st.text(max_size=200))
def test_text_round_trips_through_utf8(text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text.encode("utf-8", errors="surrogateescape")


def test_invalid_utf8_is_kept_byte_for_byte() -> None:
    data = b"\xff\xfe caf\xc3\xa9 \xc3"  # invalid start bytes and a truncated sequence
    assert tokenizer.decode(tokenizer.encode(data)) == data
    assert tokenizer.decode_text(tokenizer.encode(data)).endswith("\ufffd")


def test_decode_cuts_at_eos_and_drops_specials() -> None:
    ids = [BOS_ID, ord("a"), PAD_ID, ord("b"), EOS_ID, ord("c")]
    assert tokenizer.decode(ids) == b"ab"
    assert tokenizer.decode(ids, cut_at_eos=False) == b"abc"


def test_special_ids_are_the_documented_ones_and_agree_with_the_schema() -> None:
    assert (BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE) == (256, 257, 258, 259)
    assert (BYTE_VOCAB_SIZE, BYTE_EOS_ID) == (VOCAB_SIZE, EOS_ID)
