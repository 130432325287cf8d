"""utils.py (the assignment's maths) against hand-computed values, Monte Carlo estimates and scipy."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import norm

from hand_maths import BITS
from utils import (KLD, elbo_to_bpd, log_normal_from_eps, log_px_given_z, log_standard_normal, manifold_latents,
                   sample_reparameterize, visualize_manifold)

# ---- KLD ---------------------------------------------------------------------------------------

def test_kld_hand_values():
    # N(0, 1) against itself: 0.
    assert KLD(torch.zeros(3, 5), torch.zeros(3, 5)).tolist() == [0.0, 0.0, 0.0]
    # Unit variance, means 1 and 2: 0.5 * (1 + 4) = 2.5.
    assert KLD(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)).item() == pytest.approx(2.5)
    # sigma = 2, mean 0, one dimension: 0.5 * (4 - 1 - ln 4).
    expected = 0.5 * (4 - 1 - math.log(4))
    assert KLD(torch.zeros(1), torch.tensor([math.log(2.0)])).item() == pytest.approx(expected, rel=1e-6)


def test_kld_sums_over_last_dimension_only():
    mean = torch.randn(4, 3, 7)
    log_std = torch.randn(4, 3, 7) * 0.3
    kl = KLD(mean, log_std)
    assert kl.shape == (4, 3)
    per_dim = torch.stack([KLD(mean[..., d:d + 1], log_std[..., d:d + 1]) for d in range(7)], dim=-1)
    torch.testing.assert_close(kl, per_dim.sum(-1))


def test_kld_matches_monte_carlo():
    """E_q[log q(z) - log p(z)] estimated from 400,000 draws, log-densities written out by hand."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.7, -1.5, 0.0, 2.0], dtype=torch.float64)
    log_std = torch.tensor([-0.4, 0.3, -1.2, 0.0], dtype=torch.float64)
    std = log_std.exp()
    z = mean + std * torch.randn(400_000, 4, generator=gen, dtype=torch.float64)
    log_q = (-0.5 * ((z - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_p = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    samples = log_q - log_p
    estimate, stderr = samples.mean().item(), samples.std().item() / math.sqrt(len(samples))
    assert abs(KLD(mean, log_std).item() - estimate) < 4 * stderr


# ---- sample_reparameterize ----------------------------------------------------------------------

def test_reparameterize_moments():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0, 0.0]).expand(200_000, 3)
    std = torch.tensor([0.5, 3.0, 0.0]).expand(200_000, 3)
    z = sample_reparameterize(mean, std)
    assert z.shape == (200_000, 3)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0, 0.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([0.5, 3.0, 0.0]), atol=0.02, rtol=0)
    # Noise is independent per element: the correlation of two columns is ~0 (SE ~ 1/sqrt(N)).
    corr = np.corrcoef(z[:, 0].numpy(), z[:, 1].numpy())[0, 1]
    assert abs(corr) < 0.01


def test_reparameterize_gradients():
    """dz/dmean = 1 and dz/dstd = eps = (z - mean) / std, element by element."""
    torch.manual_seed(1)
    mean = torch.randn(6, 4, requires_grad=True)
    std = (torch.rand(6, 4) + 0.5).requires_grad_()
    weights = torch.randn(6, 4)
    z = sample_reparameterize(mean, std)
    (z * weights).sum().backward()
    torch.testing.assert_close(mean.grad, weights)
    eps = ((z - mean) / std).detach()
    torch.testing.assert_close(std.grad, weights * eps)


def test_reparameterize_rejects_negative_std():
    with pytest.raises(ValueError, match="negative"):
        sample_reparameterize(torch.zeros(2, 3), torch.tensor([[1.0, -0.1, 1.0], [1.0, 1.0, 1.0]]))


def test_sample_reparameterize_with_zero_std_is_the_mean_and_uses_one_draw_per_entry():
    mean = torch.tensor([[0.5, -1.0, 2.0]])
    assert torch.equal(sample_reparameterize(mean, torch.zeros(1, 3)), mean)  # std = 0 is allowed
    torch.manual_seed(17)
    z = sample_reparameterize(mean, torch.full((1, 3), 2.0))
    torch.manual_seed(17)
    torch.testing.assert_close(z, mean + 2.0 * torch.randn(1, 3))


# ---- elbo_to_bpd --------------------------------------------------------------------------------

def test_bpd_of_known_elbos():
    # A uniform 16-way categorical costs ln 16 nats = 4 bits per pixel.
    assert elbo_to_bpd(torch.tensor(784 * math.log(16)), (128, 1, 28, 28)).item() == pytest.approx(4.0)
    # ln 2 nats per dimension = 1 bit; the batch size is not a dimension.
    assert elbo_to_bpd(torch.tensor(3072 * math.log(2)), (1, 3, 32, 32)).item() == pytest.approx(1.0)
    elbos = torch.tensor([0.0, 784.0, 1568.0])
    torch.testing.assert_close(elbo_to_bpd(elbos, (7, 1, 28, 28)), elbos / 784 / math.log(2))


def test_elbo_to_bpd_ignores_the_batch_size_and_counts_every_dimension():
    nats = torch.tensor([784 * math.log(2), 0.0, 3.0])
    assert elbo_to_bpd(nats, (5, 1, 28, 28)).tolist() == pytest.approx([1.0, 0.0, 3.0 / BITS])
    assert elbo_to_bpd(torch.tensor(6 * math.log(2)), (1, 2, 3)).item() == pytest.approx(1.0)


# ---- the log-densities -------------------------------------------------------------------------

def test_log_densities_match_closed_forms():
    from scipy.stats import norm
    gen = torch.Generator().manual_seed(0)
    mean, log_std, eps = (torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    z = mean + log_std.exp() * eps
    expected_q = norm.logpdf(z.numpy(), loc=mean.numpy(), scale=log_std.exp().numpy()).sum(-1)
    torch.testing.assert_close(log_normal_from_eps(eps, log_std), torch.as_tensor(expected_q))
    torch.testing.assert_close(log_standard_normal(z), torch.as_tensor(norm.logpdf(z.numpy()).sum(-1)))
    # log p(x|z): a pixel's log-probability is its level's log-softmax; all-equal logits: 784 * -ln 16.
    logits = torch.zeros(2, 16, 28, 28)
    logits[1, 3] = 2.0
    imgs = torch.full((2, 1, 28, 28), 3)
    torch.testing.assert_close(log_px_given_z(logits, imgs),
                               torch.tensor([-784 * math.log(16), 784 * (2 - math.log(15 + math.e ** 2))],
                                            dtype=torch.float64), rtol=1e-6, atol=0)  # float32 per pixel


def test_one_bit_is_exactly_a_bernoulli():
    """Two logits (a, b) per pixel: the categorical log-likelihood is the Bernoulli one with logit b - a."""
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 28, 28, dtype=torch.float64)
    imgs = torch.randint(0, 2, (3, 1, 28, 28))
    bernoulli = -F.binary_cross_entropy_with_logits(logits[:, 1] - logits[:, 0], imgs[:, 0].double(),
                                                    reduction="none").flatten(1).sum(1)
    assert torch.allclose(log_px_given_z(logits, imgs), bernoulli, rtol=1e-12)


# ---- visualize_manifold -------------------------------------------------------------------------

class RecordingDecoder(nn.Module):
    """Remembers its input and returns the logits `logits_fn(z)` (the tests put all mass on one level per image)."""

    def __init__(self, logits_fn):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.logits_fn = logits_fn
        self.seen = None

    def forward(self, z):
        self.seen = z.clone()
        return self.logits_fn(z)

    @property
    def device(self):
        return self.dummy.device


def test_manifold_z_grid_is_the_ppf_grid():
    grid = 5
    decoder = RecordingDecoder(lambda z: torch.zeros(len(z), 16, 28, 28))
    visualize_manifold(decoder, grid_size=grid)
    ppf = norm.ppf((np.arange(grid) + 0.5) / grid)
    # Row-major over the image grid: column j varies z1, row i varies z2.
    expected = np.array([[ppf[j], ppf[i]] for i in range(grid) for j in range(grid)])
    np.testing.assert_allclose(decoder.seen.numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(manifold_latents(grid).numpy(), expected, rtol=0, atol=1e-6)
    assert ppf[0] == pytest.approx(-1.2815515655446004)  # Phi^-1(0.1)


def test_manifold_pixels_are_the_decoder_mean():
    """Image k puts all mass on level k (k < 16); the last one splits 50/50 between 0 and 15."""
    grid = 4

    def logits_fn(z):
        logits = torch.full((len(z), 16, 28, 28), -1e4)
        for k in range(len(z) - 1):
            logits[k, k] = 0.0
        logits[-1, 0] = logits[-1, 15] = 0.0
        return logits

    decoder = RecordingDecoder(logits_fn)
    decoder.train()
    img = visualize_manifold(decoder, grid_size=grid)
    assert decoder.training  # mode restored
    pad, size = 2, 28  # make_grid's default padding
    assert img.shape == (3, pad + grid * (size + pad), pad + grid * (size + pad))
    assert img.min() >= 0 and img.max() <= 1
    for k in range(grid * grid):
        row, col = divmod(k, grid)
        y, x = pad + row * (size + pad), pad + col * (size + pad)
        tile = img[:, y:y + size, x:x + size]
        expected = 0.5 * 15 / 15 if k == grid * grid - 1 else k / 15
        torch.testing.assert_close(tile, torch.full_like(tile, expected), atol=1e-6, rtol=0)
