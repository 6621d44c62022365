"""The one device policy (configs.runtime.choose_device) that training, evaluation, the benchmarks and the seed's
DEVICE export use: what each request gives with and without a visible GPU. torch's own `cuda.is_available` (and
`mps.is_available`) are replaced, so that both sides are checked on any machine; nothing of ours is."""

from __future__ import annotations

import pytest
import torch

from configs.errors import UserError
from configs.runtime import DeviceUnavailableError, choose_device


@pytest.fixture
def gpu_visible(monkeypatch):
    def set_visible(cuda: bool, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_visible


@pytest.mark.parametrize(
    ("requested", "local_rank", "expected"),
    [
        ("auto", None, "cuda"),  # evaluation: the plain device
        ("auto", 1, "cuda:1"),  # training under torchrun: this rank's GPU
        (None, None, "cuda"),
        ("cuda", 0, "cuda:0"),
        ("cuda:1", None, "cuda:1"),
        ("cpu", 1, "cpu"),
    ],
)
def test_with_a_gpu(gpu_visible, requested, local_rank, expected) -> None:
    gpu_visible(cuda=True)
    assert choose_device(requested, local_rank) == torch.device(expected)


@pytest.mark.parametrize("requested", ["auto", None, "", "cpu"])
def test_without_a_gpu_the_cpu(gpu_visible, requested) -> None:
    gpu_visible(cuda=False)
    assert choose_device(requested, 0) == torch.device("cpu")


@pytest.mark.parametrize("requested", ["cuda", "cuda:0"])
def test_cuda_asked_for_and_absent_is_refused_unless_a_fallback_is_given(gpu_visible, requested) -> None:
    gpu_visible(cuda=False)
    with pytest.raises(DeviceUnavailableError, match="no CUDA device is visible") as refused:
        choose_device(requested, 0)
    assert isinstance(refused.value, UserError) and isinstance(refused.value, RuntimeError)
    told = []
    assert choose_device(requested, on_missing_cuda=told.append) == torch.device("cpu")
    assert told == [requested]


def test_mps_only_for_the_seed_export(gpu_visible) -> None:
    gpu_visible(cuda=False, mps=True)
    assert choose_device("auto") == torch.device("cpu")  # training and evaluation never picked mps
    assert choose_device("auto", apple_gpu=True) == torch.device("mps")
    gpu_visible(cuda=True, mps=True)
    assert choose_device("auto", apple_gpu=True) == torch.device("cuda")
