"""HierarchicalAutoencoder: the training objective, any number of levels, every top-LM mode, two-stage
freezing, checkpoint-friendly state, bf16 autocast."""

import pytest
import torch

from configs import load_config
from model import HierarchicalAutoencoder, build_model
from tests.model_helpers import padded_batch, text_windows, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)

TEXTS = [b"The lamp had to turn once every twenty seconds.", b"Twice a day the sea comes up the beach."]


def test_forward_reports_documented_metrics_and_total_is_their_weighted_sum():
    config = tiny_config(aux_lm_loss_weight=0.5, top_lm_loss_weight=0.3, level_changes={"beta": 1.0})
    model = build_model(config)
    model(text_windows(48, 4))  # the codebook starts from the first batch (VQ loss ~0 there); later ones differ
    tokens, kpm = padded_batch(TEXTS)
    out = model(tokens, kpm)
    assert float(out.vq_loss) > 0.05 * float(out.total_loss), "the VQ term must be visible in the sum"
    for key in (
        "total_loss",
        "avg_reconstruction_loss",
        "vq_loss",
        "avg_aux_lm_loss",
        "avg_top_code_lm_loss",
    ):
        assert getattr(out, key).dim() == 0 and torch.isfinite(getattr(out, key)), key
    assert len(out.compression_ratios) == len(out.all_codebook_perplexities) == 1
    assert 0 < float(out.compression_ratios[0]) <= 1
    expected = out.avg_reconstruction_loss + out.vq_loss + 0.5 * out.avg_aux_lm_loss + 0.3 * out.avg_top_code_lm_loss
    torch.testing.assert_close(out.total_loss, expected)


def test_two_levels_forward_backward_compress_decompress_and_code_length():
    model = build_model(tiny_config(num_levels=2, level_changes=dict(max_segment_len=3)))
    tokens, kpm = padded_batch(TEXTS)
    out = model(tokens, kpm)
    out.total_loss.backward()
    assert len(out.reconstruction_losses) == 2 and len(out.compression_ratios) == 2
    for compressor in model.compressors:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in compressor.compression_layers.parameters())
    compressed = model.compress(tokens, kpm)
    assert compressed.codes[1].shape[1] < compressed.codes[0].shape[1] < tokens.shape[1]
    # level 1 reads level 0's codes; padding of level 1 is level 0's invalid rows
    assert torch.equal(compressed.key_padding_masks[1], ~compressed.row_valid[0])
    restored = model.decompress(compressed.top_codes, compressed=compressed, max_len=80)
    assert restored.shape[0] == 2 and restored.shape[1] > compressed.top_codes.shape[1]
    bits = model.code_length_bits(tokens, kpm)
    assert bits.shape == (2,) and torch.isfinite(bits).all()


@pytest.mark.parametrize("num_levels,top", [(1, "discrete"), (1, "continuous"), (1, None), (2, "continuous")])
def test_each_mode_trains_on_a_fixed_batch(num_levels, top):
    torch.manual_seed(0)
    model = build_model(tiny_config(num_levels=num_levels, top=top))
    tokens = text_windows(48, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = last = None
    for _step in range(25):
        out = model(tokens)
        optimizer.zero_grad()
        out.total_loss.backward()
        optimizer.step()
        first = (
            first
            if first is not None
            else {k: float(getattr(out, k).detach()) for k in ("total_loss", "avg_top_code_lm_loss")}
        )
        last = {k: float(getattr(out, k).detach()) for k in ("total_loss", "avg_top_code_lm_loss")}
    assert last["total_loss"] < 0.8 * first["total_loss"]
    if top is not None:
        assert last["avg_top_code_lm_loss"] > 0


def stage_configs():
    stage1 = tiny_config(top=None)
    stage2 = tiny_config(top="discrete")
    return stage1, stage2


def test_frozen_base_stays_in_eval_and_a_stage2_step_changes_no_base_tensor(tmp_path):
    stage1, stage2 = stage_configs()
    base = build_model(stage1)
    base(text_windows(48, 4))  # move VQ statistics away from init
    path = tmp_path / "base.pt"
    base.save_base_components(path)

    model = build_model(stage2)
    model.load_base_components(path, freeze=True)
    model.train()
    for module in (model.compressors, model.expanders):
        assert all(not m.training for m in module.modules())
        assert all(not p.requires_grad for p in module.parameters())
    assert model.top_lm.training
    before = {
        k: v.clone()
        for k, v in list(model.compressors.state_dict().items())
        + [("expanders." + k, v) for k, v in model.expanders.state_dict().items()]
    }
    torch.testing.assert_close(
        model.compressors.state_dict()["0.quantizer.codebook"],
        base.compressors.state_dict()["0.quantizer.codebook"],
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    top_before = [p.clone() for p in model.top_lm.parameters()]
    for _ in range(3):
        model.train()
        out = model(text_windows(48, 4, offset=100))
        optimizer.zero_grad()
        out.total_loss.backward()
        optimizer.step()
    after = {
        k: v
        for k, v in list(model.compressors.state_dict().items())
        + [("expanders." + k, v) for k, v in model.expanders.state_dict().items()]
    }
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(top_before, model.top_lm.parameters(), strict=False))


def test_state_is_tensors_only_and_loads_with_weights_only(tmp_path):
    model = build_model(tiny_config())
    model(text_windows(48, 2))
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert not any("ring" in k for k in state)
    fresh = build_model(tiny_config())
    fresh.load_state_dict(state)
    tokens, kpm = padded_batch(TEXTS)
    torch.testing.assert_close(fresh.eval().code_length_bits(tokens, kpm), model.eval().code_length_bits(tokens, kpm))
    base_path = tmp_path / "base.pt"
    model.save_base_components(base_path)
    assert set(torch.load(base_path, weights_only=True)) == {"compressors", "expanders"}


def test_bf16_autocast_forward_backward_keeps_vq_in_fp32():
    model = build_model(tiny_config())
    tokens, kpm = padded_batch(TEXTS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(tokens, kpm)
    out.total_loss.backward()
    assert torch.isfinite(out.total_loss)
    quantizer = model.compressors[0].quantizer
    assert all(t.dtype == torch.float32 for t in (quantizer.codebook, quantizer.ema_count, quantizer.ema_sum))
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("path", ["configs/ci_config.py", "configs/stage1_super_tiny_config.py", "configs/config.py"])
def test_build_model_accepts_the_shipped_configs(path):
    config = load_config(path)
    model = build_model(config)
    assert isinstance(model, HierarchicalAutoencoder)
    assert (model.top_lm is None) == (config.model.top_transformer_config is None)
    assert not any(p is model.compressors[0].quantizer.codebook for p in model.parameters())  # EMA-trained only
    # the model reads its own section only (configs/schema.py): built from it alone, it is the same model
    alone = HierarchicalAutoencoder(config.model)
    assert alone.config is config.model and model.exp_config is config
    assert alone.state_dict().keys() == model.state_dict().keys()


def test_loading_a_base_of_another_shape_names_the_part(tmp_path):
    build_model(tiny_config(top=None)).save_base_components(tmp_path / "base.pt")
    wider = build_model(tiny_config(level_changes=dict(dim=64)))
    with pytest.raises(RuntimeError, match="the compressors do not fit"):
        wider.load_base_components(tmp_path / "base.pt")


def test_padding_tokens_are_masked_even_without_a_mask():
    model = build_model(tiny_config()).eval()
    tokens, kpm = padded_batch(TEXTS)
    with_mask, without = model(tokens, kpm), model(tokens)
    for key in ("total_loss", "avg_reconstruction_loss", "avg_aux_lm_loss", "avg_top_code_lm_loss"):
        torch.testing.assert_close(getattr(with_mask, key), getattr(without, key))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["block", "flex"])
def test_cuda_bf16_autocast_training_step(backend):
    model = build_model(tiny_config(num_levels=2, attention_backend=backend)).cuda()
    tokens, kpm = padded_batch(TEXTS)
    tokens, kpm = tokens.cuda(), kpm.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(tokens, kpm)
    out.total_loss.backward()
    assert torch.isfinite(out.total_loss)
    quantizer = model.compressors[0].quantizer
    assert quantizer.ema_count.dtype == torch.float32 and quantizer.codebook.dtype == torch.float32
    bits = model.code_length_bits(tokens, kpm)
    assert torch.isfinite(bits).all()
    assert model.generate_bytes(tokens[0][~kpm[0]], max_new_bytes=8).numel() <= 8


def test_attention_backend_belongs_to_each_model(monkeypatch):
    """Two models in one process keep their own sliding-window kernel: building the second does not change
    the first's (a process-wide setting would), and every self-attention call passes its model's backend."""
    from model import blocks

    flex = build_model(tiny_config(attention_backend="flex")).eval()
    block = build_model(tiny_config(attention_backend="block")).eval()
    seen = []
    original = blocks.sliding_window_attention

    def recording(*args, **kwargs):
        seen.append(args[5] if len(args) > 5 else kwargs.get("backend", "block"))
        return original(*args, **kwargs)

    monkeypatch.setattr(blocks, "sliding_window_attention", recording)
    tokens, kpm = padded_batch(TEXTS)
    reference = block(tokens, kpm).total_loss
    assert seen and set(seen) == {"block"}
    seen.clear()
    # On CPU "flex" falls back to the block path, so the numbers match while the setting differs.
    torch.testing.assert_close(flex(tokens, kpm).total_loss, reference)
    assert seen and set(seen) == {"flex"}
    with pytest.raises(ValueError, match="unknown attention backend"):
        block.set_attention_backend("dense")


def test_outputs_are_typed_and_every_tensor_is_visible_to_ddp():
    """forward gives an AutoencoderOutput, compress a CompressedText; DistributedDataParallel finds the
    tensors of a forward output by pytree flattening, so every loss must be a leaf, not hidden in an object."""
    import torch.utils._pytree as pytree

    from model.outputs import AutoencoderOutput, CompressedText

    model = build_model(tiny_config(num_levels=2))
    tokens, kpm = padded_batch(TEXTS)
    out = model(tokens, kpm)
    assert isinstance(out, AutoencoderOutput) and isinstance(out.compressed, CompressedText)
    assert isinstance(model.compress(tokens, kpm), CompressedText)
    leaves = pytree.tree_leaves(out)
    assert any(leaf is out.total_loss for leaf in leaves)
    assert any(leaf is out.compressed.top_codes for leaf in leaves)
    assert all(isinstance(leaf, torch.Tensor) or leaf is None for leaf in leaves)
    assert out.compressed.top_codes is out.compressed.levels[-1].codes
    assert [float(r) for r in out.compression_ratios] == [float(o.compression_ratio) for o in out.compressed.levels]
