"""Tests of dgmkit/vae/model.py: VAE.forward against the single-sample ELBO assembled by hand (flows included; the
densities written out in hand_maths.py), push broadcasting each image's flow, the zero-initialised model's values,
per-image averaging, a flow of length 0 being the plain model bit for bit, amortized flow parameters, sampling."""
import math

import pytest
import torch

from dgmkit.vae import flows
from dgmkit.vae.bounds import objective
from dgmkit.vae.model import VAE
from hand_maths import BITS, hand_single_sample, images, make_model

pytestmark = pytest.mark.usefixtures("one_thread")


def zero_vae(z_dim=20, num_filters=32):
    model = VAE(num_filters=num_filters, z_dim=z_dim, lr=1e-3)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def random_images(batch, seed=0):
    return torch.randint(0, 16, (batch, 1, 28, 28), generator=torch.Generator().manual_seed(seed))


# ---- forward: the single-sample ELBO, flows included --------------------------------------------------------------

@pytest.mark.parametrize("flow, length", [("none", 0), ("planar", 3), ("radial", 2)])
def test_forward_is_the_hand_assembled_single_sample_elbo(flow, length):
    """L_reg = log q0(z0) - sum log|det| - log p(z_L) (Rezende & Mohamed eq. 13; the closed-form KL without a
    flow), L_rec = -log p(x|z_L), bpd = their sum / (784 ln 2), for forward's own eps = randn [B, D]."""
    model = make_model(flow, length)
    imgs = images(4, 1)
    torch.manual_seed(3)
    L_rec, L_reg, bpd = model(imgs)
    torch.manual_seed(3)
    hand = hand_single_sample(model, imgs)
    rec, kl = hand["rec"], hand["kl"]
    if flow != "none":
        assert hand["log_det"].abs().mean() > 0.1  # the flow changes the density: dropping log_det would show
    assert L_rec.item() == pytest.approx(rec.mean().item(), rel=1e-5)
    assert L_reg.item() == pytest.approx(kl.mean().item(), rel=1e-5, abs=1e-5)
    assert bpd.item() == pytest.approx((rec + kl).mean().item() / BITS, rel=1e-5)
    assert L_rec.dtype == L_reg.dtype == bpd.dtype == torch.float32 and L_rec.shape == ()


def test_push_broadcasts_each_images_flow_over_its_samples():
    model = make_model("planar", 2)
    imgs = images(2, 3)
    _, _, params = model.encode(imgs)
    z0 = torch.randn(2, 5, 3)
    z, log_det = model.push(z0, params)
    assert z.shape == (2, 5, 3) and log_det.shape == (2, 5)
    for b in range(2):
        zb, ldb = flows.flow("planar", z0[b], params[b], 2)  # image b's own flow on its 5 samples
        torch.testing.assert_close(z[b], zb)
        torch.testing.assert_close(log_det[b], ldb)
    plain = make_model("none", 0)
    z, log_det = plain.push(z0.double(), None)
    assert torch.equal(z, z0.double()) and torch.equal(log_det, torch.zeros(2, 5, dtype=torch.float64))


def test_flow_length_0_is_todays_model_bit_for_bit():
    """--flow planar --flow_length 0 and --flow none build the same network and the same loss, bit for bit,
    and the objective with elbo, K = 1 is exactly VAE.forward."""
    imgs = images(5, 0)
    results = []
    for flow in ("none", "planar", "radial"):
        torch.manual_seed(0)
        model = VAE(4, 3, 1e-3, flow, 0)
        assert not hasattr(model, "flow_head")
        torch.manual_seed(1)
        results.append(torch.stack(model(imgs)))
        torch.manual_seed(1)
        terms = objective(model, imgs, "elbo", 1)
        assert torch.equal(torch.stack([terms["rec_nats"], terms["kl_nats"], terms["bpd"]]), results[-1])
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_flow_parameters_are_amortized_per_image():
    """The encoder produces the flow parameters from each image's features (not global constants)."""
    torch.manual_seed(0)
    model = VAE(4, 2, 1e-3, "radial", 3)
    _, _, params = model.encode(images(2, 4))
    assert params.shape == (2, 3 * (2 + 2))
    assert not torch.allclose(params[0], params[1])


# ---- values of the zero-initialised model, per-image averages, sampling -------------------------------------------

def test_zero_initialized_vae_values():
    """All weights 0: q(z|x) = N(0, I) so KL = 0; logits 0 so every pixel costs ln 16 nats (4 bits)."""
    L_rec, L_reg, bpd = zero_vae()(random_images(16))
    assert L_rec.item() == pytest.approx(784 * math.log(16), rel=1e-6)
    assert L_reg.item() == pytest.approx(0.0, abs=1e-7)
    assert bpd.item() == pytest.approx(4.0, rel=1e-6)


def test_losses_are_per_image_averages():
    """8 copies of an image give the same L_reg and L_rec as the image alone (no sum over the batch)."""
    torch.manual_seed(0)
    model = VAE(num_filters=8, z_dim=5, lr=1e-3)
    with torch.no_grad():  # std = exp(-30): z = mean, so L_rec is deterministic too
        model.encoder.net[-1].weight[5:].zero_()
        model.encoder.net[-1].bias[5:].fill_(-30.0)
    image = random_images(1, seed=3)
    one = model(image)
    eight = model(image.repeat(8, 1, 1, 1))
    for a, b in zip(one, eight):
        assert a.shape == b.shape == ()
        assert b.item() == pytest.approx(a.item(), rel=1e-5)
    assert one[1].item() > 0.1  # a real, non-zero KL was compared
    L_rec, L_reg, bpd = one
    assert bpd.item() == pytest.approx((L_rec + L_reg).item() / 784 / math.log(2), rel=1e-6)


def test_sample_dtype_shape_and_range():
    torch.manual_seed(0)
    samples = VAE(num_filters=8, z_dim=3, lr=1e-3).sample(7)
    assert samples.dtype == torch.long and samples.shape == (7, 1, 28, 28)
    assert samples.min() >= 0 and samples.max() <= 15


def test_sample_draws_from_each_pixels_categorical():
    """Logits that allow only levels 3 and 9 with equal probability: samples are 3 or 9, half each."""
    torch.manual_seed(0)
    model = zero_vae(z_dim=2, num_filters=8)
    with torch.no_grad():
        model.decoder.net[-1].bias.fill_(-1e4)
        model.decoder.net[-1].bias[[3, 9]] = 0.0
    samples = model.sample(50)  # 39,200 pixels
    assert set(samples.unique().tolist()) == {3, 9}
    fraction_nine = (samples == 9).float().mean().item()
    assert abs(fraction_nine - 0.5) < 4 * math.sqrt(0.25 / samples.numel())


def test_a_flow_kind_of_none_has_no_layers_whatever_the_length():
    """VAE(..., flow="none", flow_length=3): no flow layers (flow_length 0), for the literal and for a string built
    at run time (as a checkpoint's args or argparse hand it over), with the plain model's parameters. Kills
    `flow >= "none"` and `flow is not "none"` in the flow_length guard."""
    plain = sum(p.numel() for p in VAE(4, 2, 1e-3).parameters())
    for kind in ("none", "".join(["no", "ne"])):
        model = VAE(4, 2, 1e-3, kind, 3)
        assert model.flow_length == 0
        assert sum(p.numel() for p in model.parameters()) == plain


def test_a_flow_without_a_length_has_no_layers():
    """VAE(..., flow="planar") with the default flow_length: 0 layers (the docstring's "0: the plain diagonal
    Gaussian"), the plain model's parameters. Kills `flow_length=1` and `flow_length=-1` as the default."""
    plain = sum(p.numel() for p in VAE(4, 2, 1e-3).parameters())
    for kind in ("planar", "radial"):
        model = VAE(4, 2, 1e-3, kind)
        assert model.flow_length == 0
        assert sum(p.numel() for p in model.parameters()) == plain
