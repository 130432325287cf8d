"""Guards on the core maths, each value computed independently of the code under test: every density is
written out here (not via utils' helpers), the noise is replayed from the same seed, and the training step
is replayed with autograd and torch.optim on a deep copy. Written to kill the mutants of a mutation-testing
run (tests/mutation/README.md): the flow KL of VAE.forward without its "- log_det", train_vae minimising
the ELBO's bpd instead of the objective's, and the like."""
import math

import pytest
import torch

from dgmkit.engine.epoch import autocast
from dgmkit.stats import mean_and_se
from dgmkit.vae import flows
from dgmkit.vae.bounds import elbo_per_image, iw_log_likelihood, log_weights, objective
from hand_maths import BITS, hand_single_sample, hand_weights, images, kl_closed, make_model
from utils import elbo_to_bpd, sample_reparameterize

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- VAE.forward: the single-sample ELBO, flows included ----------------------------------------------

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


@pytest.mark.parametrize("flow, length", [("none", 0), ("planar", 2), ("radial", 2)])
def test_elbo_per_image_is_the_hand_assembled_elbo(flow, length):
    model = make_model(flow, length)
    imgs = images(3, 2)
    torch.manual_seed(4)
    parts = elbo_per_image(model, imgs)
    torch.manual_seed(4)
    hand = hand_single_sample(model, imgs)
    rec, kl, mean, log_std = hand["rec"], hand["kl"], hand["mean"], hand["log_std"]
    if flow == "none":
        per_dim = 0.5 * (torch.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std).double()
        torch.testing.assert_close(parts["kl_per_dim"], per_dim, rtol=1e-6, atol=1e-7)
    else:
        assert parts["kl_per_dim"] is None
    for key, value in (("rec", rec), ("kl", kl), ("nelbo", rec + kl)):
        assert parts[key].dtype == torch.float64
        torch.testing.assert_close(parts[key], value, rtol=1e-5, atol=1e-5)
    assert torch.equal(parts["mean"], mean) and torch.equal(parts["log_std"], log_std)


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


# ---- log weights, K-sample objectives, the IW bound ----------------------------------------------------

@pytest.mark.parametrize("max_latents, chunks", [(7, (2, 2, 1)), (2, (1,) * 5), (4096, (5,))])
@pytest.mark.parametrize("flow, length", [("none", 0), ("radial", 2), ("planar", 2)])
def test_log_weights_by_hand_in_chunks(flow, length, max_latents, chunks):
    """K = 5 samples of B = 3 images in chunks of max(1, max_latents // B) samples (7 // 3 = 2: 2 + 2 + 1
    draws; fewer latents than images: one sample at a time), each chunk one randn(B, k, D)."""
    model = make_model(flow, length)
    imgs = images(3, 4)
    torch.manual_seed(6)
    terms = log_weights(model, imgs, 5, max_latents=max_latents)
    torch.manual_seed(6)
    hand, _ = hand_weights(model, imgs, chunks)
    for key in hand:
        assert terms[key].dtype == torch.float64 and terms[key].shape == (3, 5)
        torch.testing.assert_close(terms[key], hand[key], rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", ["elbo", "iwae"])
@pytest.mark.parametrize("flow, length", [("none", 0), ("planar", 2)])
def test_k_sample_objective_by_hand(name, flow, length):
    model = make_model(flow, length)
    imgs = images(3, 5)
    torch.manual_seed(8)
    terms = objective(model, imgs, name, 4)
    torch.manual_seed(8)
    hand, (mean, log_std) = hand_weights(model, imgs, (4,))
    log_w = hand["log_px"] + hand["log_pz"] - hand["log_q"]  # [B, 4]
    if name == "iwae":
        loss = -(torch.logsumexp(log_w, dim=1) - math.log(4)).mean()
    else:
        loss = -log_w.mean()
    rec = -hand["log_px"].mean()
    kl = (hand["log_q"] - hand["log_pz"]).mean() if length else kl_closed(mean, log_std).mean()
    expected = {"loss": loss, "objective_bpd": loss / BITS, "rec_nats": rec, "kl_nats": kl, "bpd": (rec + kl) / BITS}
    for key, value in expected.items():
        assert terms[key].dtype == torch.float32 and terms[key].shape == ()
        assert terms[key].item() == pytest.approx(value.item(), rel=1e-5), key


@pytest.mark.parametrize("chunk_size, chunks", [(7, (2, 2, 1)), (2, (1,) * 5)])
@pytest.mark.parametrize("flow, length", [("none", 0), ("radial", 1)])
def test_iw_log_likelihood_is_the_logsumexp_of_the_chunked_weights(flow, length, chunk_size, chunks):
    """B = 3: chunks of max(1, chunk_size // B) samples, combined by a running log-sum-exp, minus log K."""
    model = make_model(flow, length)
    imgs = images(3, 6)
    torch.manual_seed(9)
    with torch.no_grad():
        estimate = iw_log_likelihood(model, imgs, 5, chunk_size=chunk_size)
    torch.manual_seed(9)
    with torch.no_grad():
        hand, _ = hand_weights(model, imgs, chunks)
    log_w = hand["log_px"] + hand["log_pz"] - hand["log_q"]
    torch.testing.assert_close(estimate, torch.logsumexp(log_w, dim=1) - math.log(5), rtol=1e-6, atol=1e-4)
    assert estimate.dtype == torch.float64
    with pytest.raises(ValueError, match="num_samples must be at least 1, got 0"):
        iw_log_likelihood(model, imgs, 0)


# ---- defaults and small helpers ------------------------------------------------------------------------

@pytest.mark.parametrize("flow, length", [("none", 0), ("planar", 1)])
def test_objective_defaults_to_the_assignments_loss(flow, length):
    """objective(model, imgs) with no name and no K is the ELBO with one sample: VAE.forward, bit for bit."""
    model = make_model(flow, length)
    imgs = images(2, 40)
    torch.manual_seed(16)
    terms = objective(model, imgs)
    torch.manual_seed(16)
    L_rec, L_reg, bpd = model(imgs)
    assert torch.equal(terms["loss"], L_rec + L_reg) and torch.equal(terms["objective_bpd"], bpd)
    assert torch.equal(terms["rec_nats"], L_rec) and torch.equal(terms["kl_nats"], L_reg)
    assert torch.equal(terms["bpd"], bpd)


def test_mean_and_se_by_hand():
    values = torch.tensor([1.0, 2.0, 4.0, 9.0], dtype=torch.float64)
    mean, se = mean_and_se(values)
    sample_var = ((values - 4.0) ** 2).sum().item() / 3  # N - 1
    assert mean == 4.0 and se == pytest.approx(math.sqrt(sample_var / 4), rel=1e-12)
    assert mean_and_se(torch.tensor([3.0, 5.0], dtype=torch.float64)) == pytest.approx((4.0, 1.0))
    assert mean_and_se(torch.tensor([7.5])) == (7.5, None)
    assert mean_and_se(torch.tensor([], dtype=torch.float64))[1] is None  # "None for N < 2", N = 0 included


def test_elbo_to_bpd_ignores_the_batch_size_and_counts_every_dimension():
    nats = torch.tensor([784 * math.log(2), 0.0, 3.0])
    assert elbo_to_bpd(nats, (5, 1, 28, 28)).tolist() == pytest.approx([1.0, 0.0, 3.0 / BITS])
    assert elbo_to_bpd(torch.tensor(6 * math.log(2)), (1, 2, 3)).item() == pytest.approx(1.0)


def test_sample_reparameterize_with_zero_std_is_the_mean_and_uses_one_draw_per_entry():
    mean = torch.tensor([[0.5, -1.0, 2.0]])
    assert torch.equal(sample_reparameterize(mean, torch.zeros(1, 3)), mean)  # std = 0 is allowed
    torch.manual_seed(17)
    z = sample_reparameterize(mean, torch.full((1, 3), 2.0))
    torch.manual_seed(17)
    torch.testing.assert_close(z, mean + 2.0 * torch.randn(1, 3))


def test_a_given_posterior_is_used_not_recomputed():
    """evaluate_loader passes elbo_per_image's posterior on: neither log_weights nor iw_log_likelihood encodes
    again (and they use the one given: a shifted posterior changes the result)."""
    model = make_model("planar", 1)
    imgs = images(2, 41)
    with torch.no_grad():
        posterior = model.encode(imgs)
        torch.manual_seed(18)
        plain = iw_log_likelihood(model, imgs, 3)
        torch.manual_seed(18)
        weights = log_weights(model, imgs, 3)

        def refuse(_):
            raise AssertionError("encoded again")
        model.encode = refuse
        torch.manual_seed(18)
        assert torch.equal(iw_log_likelihood(model, imgs, 3, posterior=posterior), plain)
        torch.manual_seed(18)
        given = log_weights(model, imgs, 3, posterior)
        assert all(torch.equal(given[key], weights[key]) for key in weights)
        torch.manual_seed(18)
        shifted = (posterior[0] + 1.0, posterior[1], posterior[2])
        assert not torch.equal(iw_log_likelihood(model, imgs, 3, posterior=shifted), plain)


def test_objective_compares_the_name_by_value():
    """The name as argparse hands it over (a string built at run time, not the interned literal) selects IWAE."""
    model = make_model("none", 0)
    imgs = images(2, 42)
    results = {}
    for label, name in (("literal", "iwae"), ("built", "".join(["iw", "ae"])), ("elbo", "elbo")):
        torch.manual_seed(19)
        results[label] = objective(model, imgs, name, 3)["loss"]
    assert torch.equal(results["built"], results["literal"]) and not torch.equal(results["built"], results["elbo"])


def test_autocast_is_bf16_exactly_for_bf16():
    """--precision bf16 (a string built at run time, as argparse gives it) turns bf16 autocast on; fp32 leaves it off."""
    for precision, on in (("".join(["bf", "16"]), True), ("fp32", False)):
        with autocast(torch.device("cpu"), precision):
            assert torch.is_autocast_enabled("cpu") is on
            assert not on or torch.get_autocast_dtype("cpu") == torch.bfloat16
