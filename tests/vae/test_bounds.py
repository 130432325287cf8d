"""Tests of dgmkit/vae/bounds.py: the single-sample ELBO per image, the log-weights of K samples drawn in chunks, the
K-sample objectives (ELBO and IWAE) and the importance-weighted estimate of log p(x), each against values assembled
by hand from the same noise (hand_maths.py writes every density out), closed forms (the KL of Kingma & Welling,
IWAE with K = 1 being the ELBO) and a model whose q(z|x) and p(x|z) are set by hand. Against quadrature (z_dim 1):
test_bounds_quadrature.py."""
import math

import pytest
import torch

from conftest import quantized_images
from dgmkit.vae.bounds import elbo_per_image, iw_log_likelihood, log_weights, objective, single_sample_elbo
from dgmkit.vae.model import VAE
from hand_maths import BITS, hand_single_sample, hand_weights, images, kl_closed, make_model
from utils import KLD, log_px_given_z

pytestmark = pytest.mark.usefixtures("one_thread")


def set_encoder_output(model, mean, log_std):
    """Make q(z|x) = N(mean, exp(log_std)^2) for every image (z_dim entries each)."""
    last = model.encoder.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([*mean, *log_std]))


# ---- the single-sample ELBO ---------------------------------------------------------------------------------------

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


def test_elbo_per_image_is_vae_forward():
    """Same random state: the per-image ELBO parts average to VAE.forward's L_rec and L_reg exactly."""
    torch.manual_seed(0)
    model = VAE(num_filters=4, z_dim=3, lr=1e-3)
    imgs, _ = quantized_images(6, seed=0)
    torch.manual_seed(7)
    L_rec, L_reg, bpd = model(imgs)
    torch.manual_seed(7)
    parts = elbo_per_image(model, imgs)
    assert parts["rec"].mean().item() == pytest.approx(L_rec.item(), rel=1e-6)
    assert parts["kl"].mean().item() == pytest.approx(L_reg.item(), rel=1e-6)
    assert (parts["nelbo"].mean().item() / 784 / math.log(2)) == pytest.approx(bpd.item(), rel=1e-6)
    # Per latent, KL(N(mu, sigma^2) || N(0, 1)) in closed form (Kingma & Welling, appendix B).
    mean, log_std = parts["mean"].double(), parts["log_std"].double()
    expected = 0.5 * (torch.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std)  # [6, 3]
    torch.testing.assert_close(parts["kl_per_dim"], expected, rtol=1e-5, atol=1e-6)


def test_exact_when_q_is_the_prior_and_the_decoder_ignores_z():
    """q = p(z) and p(x|z) = p(x): every weight equals p(x), so the estimate is exact for any K and chunking."""
    torch.manual_seed(0)
    model = VAE(num_filters=4, z_dim=2, lr=1e-3).eval()
    set_encoder_output(model, [0.0, 0.0], [0.0, 0.0])
    with torch.no_grad():
        model.decoder.linear[0].weight.zero_()
    imgs, _ = quantized_images(3, seed=1)
    with torch.inference_mode():
        exact = log_px_given_z(model.decoder(torch.zeros(3, 2)), imgs)  # [3]
        for num_samples, chunk_size in [(1, 4096), (7, 6), (7, 9), (10, 3), (50, 4096)]:  # uneven last chunks
            # Tolerance: float32 rounding of the decoder at other batch sizes; a lost or double-counted
            # sample would be off by at least log(50/49) = 0.02 nats.
            torch.testing.assert_close(iw_log_likelihood(model, imgs, num_samples, chunk_size), exact,
                                       rtol=0, atol=1e-4)
        torch.testing.assert_close(-elbo_per_image(model, imgs)["nelbo"], exact, rtol=0, atol=1e-4)


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


# ---- the objectives' identities: K = 1, the mean of ELBOs, the closed-form KL, gradients --------------------------

@pytest.mark.parametrize("flow, length", [("none", 0), ("planar", 3), ("radial", 2)])
def test_iwae_k1_is_the_assignments_elbo_for_the_same_noise(flow, length):
    """IWAE with K = 1 is the VAE (Burda et al. 2016): the loss equals -(log p(x|z) - KL) for the same eps,
    assembled here by hand from the encoder's outputs, the flow and the decoder; the KL is the closed form
    without a flow (as the default ELBO uses) and log q_L(z_L|x) - log p(z_L) with one. And every term is
    bit for bit the default objective's (elbo, K = 1)."""
    torch.manual_seed(0)
    model = VAE(4, 3, 1e-3, flow, length)
    imgs = images(4, 1)
    torch.manual_seed(5)
    terms = objective(model, imgs, "iwae", 1)
    torch.manual_seed(5)
    default = objective(model, imgs, "elbo", 1)
    assert all(torch.equal(terms[key], default[key]) for key in default)
    torch.manual_seed(5)
    mean, log_std, params = model.encode(imgs)
    eps = torch.randn(4, 3)  # [B, D], the one draw per image
    z, log_det = model.push(mean + log_std.exp() * eps, params)
    if flow == "none":
        kl = 0.5 * (torch.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std).sum(1)  # Kingma & Welling, app. B
    else:  # log q0(z0) - sum log|det| - log p(z_L), Rezende & Mohamed eq. 13, each density written out
        log_q0 = (-0.5 * eps ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(1)
        kl = log_q0 - log_det - (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(1)
    log_px = log_px_given_z(model.decoder(z), imgs)  # [B]
    assert terms["loss"].item() == pytest.approx((-log_px + kl.double()).mean().item(), rel=1e-6)
    assert terms["kl_nats"].item() == pytest.approx(kl.mean().item(), rel=1e-5)


def test_elbo_with_k_samples_is_the_mean_of_single_sample_elbos():
    torch.manual_seed(0)
    model = VAE(4, 2, 1e-3, "planar", 2)
    imgs = images(3, 2)
    torch.manual_seed(9)
    terms = log_weights(model, imgs, 6)  # [B, 6] each
    torch.manual_seed(9)
    loss = objective(model, imgs, "elbo", 6)["loss"]
    single = -(terms["log_px"] + terms["log_pz"] - terms["log_q"])  # [B, 6]: six single-sample losses
    assert loss.item() == pytest.approx(single.mean().item(), rel=1e-6)
    torch.manual_seed(9)
    iwae = objective(model, imgs, "iwae", 6)["loss"]
    assert iwae.item() == pytest.approx(-(torch.logsumexp(-single, 1) - math.log(6)).mean().item(), rel=1e-6)
    assert iwae.item() <= loss.item()  # Jensen: the IW bound is at least the average ELBO, draw by draw


def test_monte_carlo_kl_without_a_flow_averages_to_the_closed_form():
    """log q(z|x) - log p(z) at z ~ q, averaged over many draws, is KL(q || p) of utils.KLD."""
    torch.manual_seed(0)
    model = VAE(4, 3, 1e-3)
    imgs = images(2, 3)
    with torch.no_grad():
        mean, log_std, _ = model.encode(imgs)
        terms = log_weights(model, imgs, 4000)  # [2, 4000]
    mc = terms["log_q"] - terms["log_pz"]
    closed = KLD(mean.double(), log_std.double())  # [2]
    se = mc.std(dim=1) / math.sqrt(mc.shape[1])
    assert ((mc.mean(dim=1) - closed).abs() < 4 * se).all()
    assert (se < 0.05).all()  # a sharp test: a KL off by 0.2 nats would be noticed


def test_gradients_flow_through_the_logsumexp_to_every_part():
    torch.manual_seed(0)
    model = VAE(4, 2, 1e-3, "planar", 2)
    objective(model, images(3, 5), "iwae", 4)["loss"].backward()
    for name in ("flow_head.weight", "encoder.net.0.weight", "decoder.linear.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


# ---- defaults and the posterior given ----------------------------------------------------------------------------

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


def test_single_sample_elbo_is_per_image_by_default():
    """single_sample_elbo(model, imgs) without per_image: the float64 [B] terms of evaluation (with the closed-form
    KL per dimension), as elbo_per_image gives them. Kills `per_image=False` as the default."""
    model = make_model("none", 0)
    imgs = images(3, 42)
    torch.manual_seed(5)
    terms = single_sample_elbo(model, imgs)
    assert terms["rec"].shape == (3,) and terms["rec"].dtype == torch.float64
    assert terms["kl"].shape == (3,) and terms["kl_per_dim"].shape == (3, 3)
    assert torch.allclose(terms["kl"], terms["kl_per_dim"].sum(dim=1))
    torch.manual_seed(5)
    explicit = single_sample_elbo(model, imgs, per_image=True)
    assert torch.equal(terms["nelbo"], explicit["nelbo"])
