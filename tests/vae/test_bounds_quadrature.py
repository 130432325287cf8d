"""dgmkit/vae/bounds.py against numerical integration: the ELBO and the importance-weighted bounds of a z_dim = 1 model,
where log p(x) = log int p(x|z) p(z) dz is computed by quadrature on a dense grid.

The model's relevant parts are set by hand, so that the tests depend on the bounds alone and on no architecture
choice: p(x|z) is an AffineDecoder (each pixel's logits an affine function of z, with seeded random slopes and
offsets; log p(x|z) spans ~340 nats over the grid and the posterior is peaked, std ~0.3), and q(z|x) is the
encoder's output layer set to a constant Gaussian (set_encoder_output). A decoder whose p(x|z) hardly depended on z
would let every estimate agree trivially. Monte Carlo tolerances are 4 standard errors (seeded, so the tests are
deterministic).
"""
import copy
import math

import pytest
import torch
import torch.nn as nn

from conftest import quantized_images
from dgmkit.vae.bounds import elbo_per_image, iw_log_likelihood, objective
from dgmkit.vae.model import VAE
from hand_maths import images
from utils import log_px_given_z

GRID = 4001  # quadrature points on [-8, 8]
Z_MAX = 8.0

pytestmark = pytest.mark.usefixtures("one_thread")


class AffineDecoder(nn.Module):
    """p(x|z) by hand for z_dim 1: logits [B, L, 28, 28] = slope * z + offset, slope ~ N(0, 0.12^2) and
    offset ~ N(0, 1) per pixel and level (seeded). Every log p(x|z) is concave in z: one peaked posterior."""

    def __init__(self, levels=16, scale=0.12, seed=1):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("slope", scale * torch.randn(levels, 28, 28, generator=gen))
        self.register_buffer("offset", torch.randn(levels, 28, 28, generator=gen))

    def forward(self, z):  # [B, 1] -> [B, L, 28, 28]
        return z[:, :, None, None] * self.slope + self.offset

    @property
    def device(self):
        return self.slope.device


def set_encoder_output(model, mean, log_std):
    """Make q(z|x) = N(mean, exp(log_std)^2) for every image (z_dim entries each)."""
    last = model.encoder.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([*mean, *log_std]))


def mean_se(values):
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


@pytest.fixture(scope="module")
def z1():
    """A z_dim = 1 VAE with the AffineDecoder, two images, and the quadrature values of log p(x) and of the
    posterior."""
    torch.manual_seed(0)
    model = VAE(num_filters=4, z_dim=1, lr=1e-3).eval()
    model.decoder = AffineDecoder()
    imgs, _ = quantized_images(2, seed=3)  # [2, 1, 28, 28]
    zs = torch.linspace(-Z_MAX, Z_MAX, GRID, dtype=torch.float64)  # [G]
    dz = 2 * Z_MAX / (GRID - 1)
    with torch.inference_mode():
        logits = model.decoder(zs.float().unsqueeze(1))  # [G, 16, 28, 28]
        log_lik = torch.stack([log_px_given_z(logits, img.expand(GRID, 1, 28, 28)) for img in imgs])  # [2, G]
    log_joint = log_lik - 0.5 * zs ** 2 - 0.5 * math.log(2 * math.pi)  # [2, G], float64
    log_px = torch.logsumexp(log_joint, dim=1) + math.log(dz)  # [2], Riemann sum in log space
    post = torch.exp(log_joint - log_px.unsqueeze(1)) * dz  # [2, G], posterior mass per grid cell
    post_mean = (post * zs).sum(1)  # [2]
    post_std = ((post * zs ** 2).sum(1) - post_mean ** 2).sqrt()  # [2]
    # The setting is meaningful and the grid resolves it: a peaked posterior, many cells across it,
    # negligible mass near the ends of the grid, and the two images' posteriors near each other (one
    # proposal fits both in test_iw_bound_matches_quadrature_with_a_good_proposal).
    span = log_lik.amax(1) - log_lik.amin(1)
    assert (span > 50).all(), f"log p(x|z) spans only {span.tolist()} nats over the grid: p(x|z) barely depends on z"
    assert (post_std > 50 * dz).all() and (post_std < 0.6).all(), \
        f"posterior std {post_std.tolist()}: not resolved by the grid (cell {dz}) or not peaked"
    tails = (post[:, :GRID // 4].sum(1) + post[:, -GRID // 4:].sum(1)).tolist()
    assert max(tails) < 1e-12, f"posterior mass {tails} near the ends of the grid"
    assert (post_mean[0] - post_mean[1]).abs() < post_std.min(), f"posterior means {post_mean.tolist()} far apart"
    return {"model": model, "imgs": imgs, "zs": zs, "dz": dz, "log_joint": log_joint, "log_px": log_px,
            "post_mean": post_mean, "post_std": post_std}


def poor_proposal(z1):
    """q(z|x) three posterior standard deviations above the posteriors' mean and 1.7 times as wide, for both images
    (about N(1.28, 0.51^2) against posteriors with means ~0.37 and std ~0.3): far from the posterior and, unlike a
    proposal near N(0, 1), not close to the prior either, so p(z) / q(z) matters."""
    model = copy.deepcopy(z1["model"])
    mean, std = z1["post_mean"].mean().item(), z1["post_std"].max().item()
    set_encoder_output(model, [mean + 3 * std], [math.log(1.7 * std)])
    return model


def draws(model, imgs, copies, num_samples, seed, chunk_size=4096):
    """IW estimates for `copies` independent copies of each image: [num_images, copies] float64 nats."""
    torch.manual_seed(seed)
    batch = imgs.repeat_interleave(copies, dim=0)  # [N*copies, 1, 28, 28]
    with torch.inference_mode():
        return iw_log_likelihood(model, batch, num_samples, chunk_size).view(len(imgs), copies)


def elbo_draws(model, imgs, copies, seed):
    torch.manual_seed(seed)
    with torch.inference_mode():
        return -elbo_per_image(model, imgs.repeat_interleave(copies, dim=0))["nelbo"].view(len(imgs), copies)


def test_iw_bound_matches_quadrature_with_a_good_proposal(z1):
    """q(z|x) = N(posterior mean, (1.5 posterior std)^2): the ELBO and IW(K=1000) against quadrature.

    Expected ELBO = log p(x) - KL(q || p(z|x)), both by quadrature; IW(K) -> log p(x) with a bias of
    about Var(w) / (2 K E[w]^2) (delta method), estimated from the K = 1 draws and bounded here.
    """
    model = copy.deepcopy(z1["model"])
    mu, sigma = z1["post_mean"].mean().item(), 1.5 * z1["post_std"].max().item()
    set_encoder_output(model, [mu], [math.log(sigma)])
    zs, dz, log_px = z1["zs"], z1["dz"], z1["log_px"]
    log_q = -0.5 * ((zs - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)  # [G]
    kl_q_post = (log_q.exp() * dz * (log_q - z1["log_joint"] + log_px.unsqueeze(1))).sum(1)  # [2]
    assert (kl_q_post > 0.1).all()  # the ELBO is visibly looser than log p(x)

    elbo = elbo_draws(model, z1["imgs"], copies=400, seed=1)  # [2, 400]
    one = draws(model, z1["imgs"], copies=400, num_samples=1, seed=2)  # [2, 400]: single log-weights
    many = draws(model, z1["imgs"], copies=6, num_samples=1000, seed=3, chunk_size=700)  # chunks of 116
    for i in range(2):
        e, e_se = mean_se(elbo[i])
        assert abs(e - (log_px[i] - kl_q_post[i]).item()) < 4 * e_se
        rel_var = torch.exp(2 * (one[i] - log_px[i])).mean().item() - 1  # Var(w) / E[w]^2
        bias = rel_var / (2 * 1000)
        assert bias < 0.01
        m, m_se = mean_se(many[i])
        assert abs(m - log_px[i].item()) < 4 * m_se + bias
        assert m_se < 0.02  # a tight check: 0.02 nats is 4e-5 bpd


def test_bound_never_exceeds_log_px_and_tightens_with_k(z1):
    """A poor proposal: ELBO <= IW(1) <= IW(10) <= IW(100) <= IW(1000) <= log p(x), up to Monte Carlo error."""
    model, img, log_px = poor_proposal(z1), z1["imgs"][:1], z1["log_px"][0].item()
    elbo_mean, elbo_se = mean_se(elbo_draws(model, img, copies=400, seed=4)[0])
    estimates = {}
    for num_samples, copies in [(1, 400), (10, 64), (100, 16), (1000, 6)]:
        estimates[num_samples] = mean_se(draws(model, img, copies, num_samples, seed=5 + num_samples)[0])
    for m, se in estimates.values():
        assert m < log_px + 4 * se  # a lower bound, up to Monte Carlo error
    ks = sorted(estimates)
    for small, large in zip(ks, ks[1:]):  # E[IW_K] is non-decreasing in K
        (m1, se1), (m2, se2) = estimates[small], estimates[large]
        assert m1 < m2 + 4 * math.hypot(se1, se2)
    (m1, se1), (m1000, se1000) = estimates[1], estimates[1000]
    assert m1000 - elbo_mean > 4 * math.hypot(se1000, elbo_se)  # strictly tighter than the ELBO
    assert m1000 - m1 > 4 * math.hypot(se1000, se1)
    assert log_px - m1000 < 0.05 * (log_px - elbo_mean)  # K = 1000 closes at least 95% of the gap
    assert log_px - elbo_mean > 2.0  # ... and the gap was large: the setting is a real test


def test_k1_estimator_has_the_elbo_mean(z1):
    """With K = 1, E[log w] = E[log p(x|z)] - KL: the ELBO (with its KL in closed form), over 1500 draws.

    Both are drawn from the same seed and compared draw by draw: the paired differences have the
    same mean whether or not the two code paths happen to draw the same z, and a smaller spread if so.
    """
    model, img = poor_proposal(z1), z1["imgs"][1:]
    elbo = elbo_draws(model, img, copies=1500, seed=20)[0]  # [1500]
    k1 = draws(model, img, copies=1500, num_samples=1, seed=20)[0]  # [1500]
    diff_mean, diff_se = mean_se(k1 - elbo)
    assert abs(diff_mean) < 4 * diff_se
    assert diff_se < 0.1  # a sharp test: 0.4 nats would be noticed
    elbo_mean, elbo_se = mean_se(elbo)
    assert z1["log_px"][1].item() - elbo_mean > 10 * elbo_se  # ... and both are far below log p(x)


# ---- trained z_dim 1 models: the IW bound grows with K ------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_z1():
    """z_dim = 1 models (no flow, and a planar flow) trained for 60 IWAE steps on 8 images, and log p(x) of
    4 of them by quadrature on a dense z grid (the decoder and prior alone define p(x))."""
    imgs = images(8, 6)
    models = {}
    for flow, length in (("none", 0), ("planar", 4)):
        torch.manual_seed(0)
        model = VAE(4, 1, 3e-3, flow, length)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(60):
            optimizer.zero_grad()
            objective(model, imgs, "iwae", 5)["loss"].backward()
            optimizer.step()
        models[flow] = model.eval()
    zs = torch.linspace(-10, 10, 8001, dtype=torch.float64)
    log_px = {}
    with torch.inference_mode():
        for flow, model in models.items():
            logits = model.decoder(zs.float().unsqueeze(1))  # [G, 16, 28, 28]
            log_lik = torch.stack([log_px_given_z(logits, img.expand(len(zs), 1, 28, 28)) for img in imgs[:4]])
            log_joint = log_lik - 0.5 * zs ** 2 - 0.5 * math.log(2 * math.pi)  # [4, G]
            log_px[flow] = torch.logsumexp(log_joint, dim=1) + math.log(zs[1] - zs[0])  # [4]
    return models, imgs[:4], log_px


@pytest.mark.slow
@pytest.mark.parametrize("flow", ["none", "planar"])
def test_iw_bound_grows_with_k_and_stays_below_quadrature(trained_z1, flow):
    models, imgs, log_px = trained_z1
    model, copies = models[flow], {1: 400, 5: 200, 50: 40}
    estimates = {}
    torch.manual_seed(11)
    with torch.inference_mode():
        for k, n in copies.items():
            values = iw_log_likelihood(model, imgs.repeat_interleave(n, dim=0), k).view(len(imgs), n)  # [4, n]
            estimates[k] = (values.mean(dim=1), values.std(dim=1) / math.sqrt(n))
    for k, (mean, se) in estimates.items():
        assert (mean < log_px[flow] + 4 * se).all(), k  # a lower bound, up to Monte Carlo error
    for small, large in ((1, 5), (5, 50)):  # non-decreasing in K, on average over images
        (m1, s1), (m2, s2) = estimates[small], estimates[large]
        assert (m1 - m2).mean() < 4 * torch.sqrt((s1 ** 2 + s2 ** 2).mean() / len(imgs))
    assert (log_px[flow] - estimates[50][0]).mean() < (log_px[flow] - estimates[1][0]).mean()
