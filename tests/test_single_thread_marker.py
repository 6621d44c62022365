"""The `torch_single_thread` marker (tests/conftest.py): a marked test runs torch on one thread, and the count it
found is back afterwards, so an unmarked test that follows is not slowed or changed. The three tests run in file
order and share the process's thread count on purpose."""

from __future__ import annotations

import pytest
import torch

BEFORE = 3  # not the machine's default, so that a restore to the default would show
ORIGINAL = torch.get_num_threads()


def test_an_unmarked_test_keeps_the_thread_count_it_sets() -> None:
    torch.set_num_threads(BEFORE)
    assert torch.get_num_threads() == BEFORE


@pytest.mark.torch_single_thread
def test_a_marked_test_runs_on_one_thread() -> None:
    assert torch.get_num_threads() == 1


def test_the_count_is_restored_after_a_marked_test() -> None:
    try:
        assert torch.get_num_threads() == BEFORE
    finally:
        torch.set_num_threads(ORIGINAL)
