"""EMA vector quantizer: consistent init, fp32 statistics under bf16 autocast, dead-code reset rule, padding
never reaching the codebook, codebook outside the optimizer, checkpoint-friendly state."""

import pytest
import torch

from model.quantizer import EmaVectorQuantizer

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


def clustered(n=256, dim=4, centers=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centers, dim, generator=g) * 5
    return means[torch.randint(0, centers, (n,), generator=g)] + 0.1 * torch.randn(n, dim, generator=g)


def test_no_code_norm_explosion_after_first_updates():
    torch.manual_seed(0)
    vq = EmaVectorQuantizer(64, 4, reset_interval=1000).train()
    for step in range(5):
        z = clustered(seed=step)
        vq(z, torch.ones(z.shape[0], dtype=torch.bool))
        assert vq.codebook.norm(dim=1).max() <= 1.5 * z.norm(dim=1).max()  # an inconsistent init gave ~1000x
    torch.testing.assert_close(vq.codebook, vq.ema_sum / vq.ema_count[:, None], atol=1e-3, rtol=1e-3)


def test_statistics_stay_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    vq = EmaVectorQuantizer(8, 4, decay=0.999, reset_interval=10_000).train()
    z = clustered(n=64)
    valid = torch.ones(64, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z.to(torch.bfloat16), valid)
        counts = torch.bincount(out.codes, minlength=8).float()
        for _ in range(200):
            out = vq(z.to(torch.bfloat16), valid)
    for name in ("codebook", "ema_count", "ema_sum"):
        assert getattr(vq, name).dtype == torch.float32
    # An EMA of a constant count converges towards it; in bf16 it stalls (8 -> 4.0).
    expected = 1.0 * 0.999**201 + counts * (1 - 0.999**201)
    torch.testing.assert_close(vq.ema_count[counts > 0], expected[counts > 0], atol=0.05, rtol=0.02)


def test_dead_code_reset_only_for_rarely_used_and_stale_codes():
    vq = EmaVectorQuantizer(6, 2, reset_interval=1)
    vq.ema_count.copy_(torch.tensor([10.0, 10.0, 0.1, 0.1, 10.0, 0.1]))  # mean 5.05
    vq.last_used.copy_(torch.tensor([200, 100, 200, 100, 100, 199]))
    before = vq.codebook.clone()
    vq.ring[:4] = torch.full((4, 2), 7.0)
    vq.ring_filled = 4
    vq.set_training_progress(step=500, total_steps=None)  # late: stale after 25 updates
    vq._reset_dead_codes(step=200)
    changed = (vq.codebook != before).any(1).tolist()
    # code 3: rare and stale -> reset; 1, 4: stale but used a lot; 2, 5: rare but recent; 0: neither
    assert changed == [False, False, False, True, False, False]
    assert vq.codebook[3].tolist() == [7.0, 7.0]
    assert int(vq.total_resets) == 1 and int(vq.last_used[3]) == 200


def test_staleness_is_short_early_and_resets_stop_in_second_half():
    vq = EmaVectorQuantizer(4, 2, reset_interval=1)
    vq.ema_count.copy_(torch.tensor([10.0, 0.1, 10.0, 10.0]))
    vq.ring[:2] = 3.0
    vq.ring_filled = 2
    vq.last_used.copy_(torch.tensor([550, 544, 550, 550]))  # code 1 unused for 6 steps
    vq._reset_dead_codes(step=550)
    assert int(vq.total_resets) == 0  # late in training: 6 < 25
    vq.last_used.copy_(torch.tensor([50, 44, 50, 50]))
    vq._reset_dead_codes(step=50)
    assert int(vq.total_resets) == 1  # early (first 100 steps): 6 >= 5
    vq.set_training_progress(step=60, total_steps=100)
    assert not vq._resets_allowed()


def test_collapsed_codebook_recovers_through_resets():
    torch.manual_seed(0)
    vq = EmaVectorQuantizer(16, 4, reset_interval=2).train()
    z0 = clustered(n=256, centers=1, seed=1)  # first batch: one cluster, every code initialised there
    vq(z0, torch.ones(256, dtype=torch.bool))
    for _step in range(40):
        z = clustered(n=256, centers=8, seed=2)
        out = vq(z, torch.ones(256, dtype=torch.bool))
    assert int(vq.total_resets) > 0
    assert out.metrics["batch_perplexity"] > 6  # uses the 8 clusters


def test_padding_and_empty_slots_never_reach_the_codebook():
    torch.manual_seed(0)
    vq = EmaVectorQuantizer(8, 4, reset_interval=1).train()
    z = clustered(n=32).view(4, 8, 4)
    valid = torch.ones(4, 8, dtype=torch.bool)
    valid[:, 5:] = False
    z_pad = z.clone()
    z_pad[~valid] = 1e4  # what padding would look like if it leaked
    a = EmaVectorQuantizer(8, 4, reset_interval=1).train()
    torch.manual_seed(1)
    out_a = a(z_pad, valid)
    torch.manual_seed(1)
    out_b = vq(z, valid)
    for name in ("codebook", "ema_count", "ema_sum"):
        torch.testing.assert_close(getattr(a, name), getattr(vq, name))
    assert a.ring[: a.ring_filled].abs().max() < 100
    assert a.ring_filled == int(valid.sum())
    torch.testing.assert_close(out_a.loss, out_b.loss)
    assert (out_a.quantized[~valid] == 0).all() and (out_a.codes[~valid] == 0).all()
    assert float(a.ema_count.sum()) == float(vq.ema_count.sum())


def test_eval_mode_changes_nothing_and_gradient_is_straight_through():
    torch.manual_seed(0)
    vq = EmaVectorQuantizer(8, 4).eval()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    z = clustered(n=16).requires_grad_(True)
    out = vq(z, torch.ones(16, dtype=torch.bool))
    for k, v in vq.state_dict().items():
        assert torch.equal(v, state[k]), k
    torch.testing.assert_close(out.quantized, vq.codebook[out.codes])
    out.quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))


def test_codebook_is_a_buffer_and_ring_buffer_is_not_saved():
    vq = EmaVectorQuantizer(8, 4)
    assert len(list(vq.parameters())) == 0
    keys = set(vq.state_dict())
    assert "codebook" in keys and "ema_count" in keys and "ring" not in keys
    assert "ring" not in dict(vq.named_buffers())  # nor broadcast by DistributedDataParallel


def _data_parallel_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(rank)  # different random draws on each rank: sync must not depend on them
    vq = EmaVectorQuantizer(16, 4, reset_interval=3).train()
    for step in range(7):
        vq.set_training_progress(step=step, total_steps=None)
        n = 0 if (rank == 1 and step == 2) else 64  # a rank without valid rows must still join
        z = clustered(n=64, centers=8, seed=10 * step + rank)
        valid = torch.arange(64) < n
        vq(z, valid)
    torch.save({k: v for k, v in vq.state_dict().items()}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_data_parallel_ranks_keep_identical_codebooks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_data_parallel_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert int(a["total_resets"]) > 0  # the resets happened, and were the same on both ranks


def _half_batch_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)  # as the trainer does: one seed for every rank
    vq = EmaVectorQuantizer(16, 4, reset_interval=3).train()
    for step in range(7):
        vq.set_training_progress(step=step, total_steps=None)
        z = clustered(n=64, centers=8, seed=step)
        vq(z[rank * 32 : (rank + 1) * 32], torch.ones(32, dtype=torch.bool))
    torch.save(dict(vq.state_dict()), f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_with_half_batches_match_one_process_with_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_half_batch_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    single = EmaVectorQuantizer(16, 4, reset_interval=3).train()
    for step in range(7):
        single.set_training_progress(step=step, total_steps=None)
        single(clustered(n=64, centers=8, seed=step), torch.ones(64, dtype=torch.bool))
    ranked = torch.load(tmp_path / "rank0.pt", weights_only=True)
    assert int(single.total_resets) > 0
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ranked[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_with_gradient_accumulation_staleness_and_intervals_count_optimizer_steps():
    torch.manual_seed(0)
    vq = EmaVectorQuantizer(16, 4, reset_interval=2).train()
    vq.set_training_progress(step=0, total_steps=None)
    everywhere, two_clusters = clustered(n=64, centers=8, seed=1), clustered(n=64, centers=8, seed=1)[:2].repeat(32, 1)
    valid = torch.ones(64, dtype=torch.bool)
    vq(everywhere, valid)  # initialises codes all over the data
    for _ in range(10):  # more micro-batches of the same optimizer step: nothing can be stale yet
        vq(two_clusters, valid)
    assert int(vq.total_resets) == 0
    for step in range(1, 12):
        vq.set_training_progress(step=step, total_steps=None)
        vq(two_clusters, valid)
    assert int(vq.total_resets) > 0  # codes away from the two points in use are recycled
