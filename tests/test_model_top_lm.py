"""Top LM (CodeSequenceTransformer): never touches the compressor's quantizer; continuous (MSE) and
discrete (CE over -distances) modes learn; the first code has a probability too."""

import pytest
import torch

from configs import TopTransformerConfig
from model import build_model
from tests.model_helpers import text_windows, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


def test_top_lm_in_train_mode_leaves_codebook_and_ema_statistics_bit_identical():
    for top in ("discrete", "continuous"):
        model = build_model(tiny_config(top=top)).train()
        compressed = model.compress(text_windows(48, 4))  # the compressor's own (legitimate) update
        quantizer = model.compressors[-1].quantizer
        before = {k: v.clone() for k, v in quantizer.state_dict().items()}
        ring = quantizer.ring.clone()
        for _ in range(3):
            model.top_lm_loss(compressed)["loss"].backward()
        for k, v in quantizer.state_dict().items():
            assert torch.equal(v, before[k]), (top, k)
        assert torch.equal(quantizer.ring, ring)


def test_discrete_logits_are_negative_scaled_squared_distances_and_first_code_is_predicted():
    model = build_model(tiny_config(top="discrete"))
    top_lm = model.top_lm
    codebook = torch.randn(5, 32)
    prediction = codebook[3:4][None] + 0.01
    logits = top_lm.code_logits(prediction, codebook)
    assert logits.argmax(-1).item() == 3
    expected = -((prediction[0, 0] - codebook) ** 2).mean(-1)
    torch.testing.assert_close(logits[0, 0], expected)
    # position 0 is predicted from the learned start vector alone
    vectors = torch.randn(1, 4, 32)
    p1 = top_lm.predict(vectors, torch.ones(1, 4, dtype=torch.bool))
    vectors2 = vectors.clone()
    vectors2[:, 1:] = torch.randn(1, 3, 32)
    p2 = top_lm.predict(vectors2, torch.ones(1, 4, dtype=torch.bool))
    torch.testing.assert_close(p1[:, :2], p2[:, :2])  # predictions 0 and 1 read only vectors before them
    assert not torch.allclose(p1[:, 2:], p2[:, 2:])


@pytest.mark.parametrize("top", ["discrete", "continuous"])
def test_top_lm_mode_learns_a_fixed_code_sequence(top):
    torch.manual_seed(0)
    model = build_model(tiny_config(top=top)).train()
    compressed = model.compress(text_windows(64, 4))
    model.eval()  # freeze the codes: only the top LM learns here
    optimizer = torch.optim.Adam(model.top_lm.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = model.top_lm_loss(compressed)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.5 * losses[0]
    if top == "continuous":
        quantizer = model.compressors[-1].quantizer
        levels = compressed.levels[-1]
        vectors = quantizer.lookup(levels.codes) * levels.row_valid[..., None]
        predictions = model.top_lm.predict(vectors, levels.row_valid)
        mse = ((predictions - vectors) ** 2).mean(-1)[levels.row_valid].mean()
        torch.testing.assert_close(model.top_lm_loss(compressed)["loss"], mse)  # MSE averaged over dims


@pytest.mark.parametrize("code_bias", [False, True])
def test_fitted_inverse_temperature_minimises_the_codes_cross_entropy(code_bias):
    torch.manual_seed(0)
    top = TopTransformerConfig(dim=32, num_layers=1, num_heads=2, continuous=True, code_bias=code_bias)
    model = build_model(tiny_config(level_changes=dict(codebook_size=16), top_transformer_config=top))
    top_lm = model.top_lm
    codebook = torch.randn(16, 32)
    codes = torch.randint(0, 16, (400,))
    noise = 0.7
    if code_bias:  # a prior the codes do not follow: the best temperature differs if the fit ignores it
        top_lm.code_bias.data.copy_(torch.linspace(-3, 3, 16))
        noise = 1.5
    predictions = codebook[codes] + noise * torch.randn(400, 32)  # noisy predictions: a finite best temperature

    def mean_nll(log_beta: float) -> float:
        top_lm.log_inverse_temperature.data.fill_(log_beta)
        logits = top_lm.code_logits(predictions[None], codebook)[0]
        return float(torch.nn.functional.cross_entropy(logits, codes))

    default = mean_nll(0.0)
    beta = top_lm.fit_inverse_temperature([predictions[:150], predictions[150:]], [codes[:150], codes[150:]], codebook)
    fitted = float(top_lm.log_inverse_temperature)
    assert beta == pytest.approx(torch.tensor(fitted).exp().item(), rel=1e-6)
    best = mean_nll(fitted)
    assert best < default - 0.1
    for shift in (-0.05, 0.05):
        assert best <= mean_nll(fitted + shift) + 1e-6


def test_continuous_top_lm_has_a_code_length_from_code_logits():
    """Every config has bits per byte: the continuous top LM's codes cost their CE under code_logits."""
    from model.code_length import code_length_breakdown

    model = build_model(tiny_config(top="continuous")).eval()
    tokens = text_windows(48, 4)
    breakdown = code_length_breakdown(model, tokens)
    compressed = model.compress(tokens)
    quantizer = model.compressors[-1].quantizer
    valid = compressed.top_valid
    vectors = quantizer.lookup(compressed.top_codes) * valid[..., None]
    logits = model.top_lm.code_logits(model.top_lm.predict(vectors, valid), quantizer.codebook)
    nats = torch.nn.functional.cross_entropy(logits.transpose(1, 2), compressed.top_codes, reduction="none")
    torch.testing.assert_close(breakdown["top"], (nats * valid).sum(1) / torch.log(torch.tensor(2.0)))
    assert bool((breakdown["top"] > 0).all())
    model.top_lm.log_inverse_temperature.data.fill_(2.0)  # the temperature is the one the code uses
    assert not torch.allclose(code_length_breakdown(model, tokens)["top"], breakdown["top"])


def test_code_bias_and_initial_temperature_shape_the_code_logits():
    """code_bias adds a learned log prior per code; initial_inverse_temperature scales the distance term."""
    torch.manual_seed(0)
    plain = build_model(tiny_config(level_changes=dict(codebook_size=16))).top_lm
    top = TopTransformerConfig(
        dim=32, num_layers=1, num_heads=2, continuous=False, code_bias=True, initial_inverse_temperature=4.0
    )
    biased = build_model(tiny_config(level_changes=dict(codebook_size=16), top_transformer_config=top)).top_lm
    assert biased.code_bias.shape == (16,) and plain.code_bias is None
    prediction, codebook = torch.randn(1, 3, 32), torch.randn(16, 32)
    biased.code_bias.data.copy_(torch.arange(16.0))
    torch.testing.assert_close(
        biased.code_logits(prediction, codebook), 4.0 * plain.code_logits(prediction, codebook) + torch.arange(16.0)
    )
