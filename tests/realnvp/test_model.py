"""Tests of part1/realnvp.py: every layer's log-det against the autograd Jacobian, invertibility, the density's
normalisation (quadrature vs Monte Carlo), the dequantization bound against the exact discrete log-likelihood
(quadrature), the D log L constant, sampling and a training smoke test. Expected values come from autograd,
Gauss-Legendre quadrature or formulas written out here (the standard normal, logit and its derivative), never
from the module's own helpers. Small models only: the file runs in a few seconds on one CPU thread."""
import copy
import math

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from dgmkit.realnvp.model import (ALPHA, ChannelCoupling, CheckerboardCoupling, LogitPreprocess, RealNVP, Squeeze,
                                  dequantized_nll)

DT = torch.float64
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
BOX = math.log((1 - ALPHA) / ALPHA)  # w = logit(s) for s in [alpha, 1 - alpha] lies in [-BOX, BOX]


def randomise(module, std=0.3, seed=1):
    """Overwrite every conv weight/bias with N(0, std^2) and every per-channel scale with U(0.5, 1.5), so no
    coupling is the identity (their output convs start at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            new = 0.5 + torch.rand(p.shape, generator=gen, dtype=DT) if name.endswith("scale") else \
                std * torch.randn(p.shape, generator=gen, dtype=DT)
            p.copy_(new)
    return module


def hand_log_normal(z):
    return (-0.5 * z ** 2 - HALF_LOG_2PI).flatten(1).sum(1)


def hand_logit_terms(y):
    """The logit pre-processing by hand: (w, per-image log dw/dy) for y [B, ...] in [0, 1]."""
    s = ALPHA + (1 - 2 * ALPHA) * y
    w = torch.log(s / (1 - s))
    return w, torch.log((1 - 2 * ALPHA) / (s * (1 - s))).flatten(1).sum(1)


def gauss_legendre(n, dims, lo=0.0, hi=1.0):
    """Tensor-product Gauss-Legendre rule on [lo, hi]^dims: nodes [n^dims, dims], weights [n^dims] (sum hi-lo^dims)."""
    x, w = np.polynomial.legendre.leggauss(n)
    x = torch.tensor(lo + (hi - lo) * (x + 1) / 2, dtype=DT)
    w = torch.tensor((hi - lo) * w / 2, dtype=DT)
    return torch.cartesian_prod(*[x] * dims), torch.cartesian_prod(*[w] * dims).prod(1)


def tiny_model(levels=2, std=0.15):
    """A RealNVP on 1x2x2 images (D = 4): 3 checkerboard couplings, squeeze to 4x1x1, 3 channel couplings,
    factor out 2x1x1, 2 final checkerboard couplings on 2x1x1; weights randomised, float64."""
    model = RealNVP(levels=levels, hidden_channels=8, num_blocks=1, image_shape=(1, 2, 2), num_scales=1,
                    couplings=3, final_couplings=2).double()
    return randomise(model, std=std)


LAYERS = {  # name -> (layer, input shape, input range)
    "checker0": (lambda: CheckerboardCoupling(2, 0, 8, 1), (2, 2, 4, 4)),
    "checker1": (lambda: CheckerboardCoupling(2, 1, 8, 1), (2, 2, 4, 4)),
    "channel": (lambda: ChannelCoupling(4, False, 8, 1), (2, 4, 2, 2)),
    "channel_flip": (lambda: ChannelCoupling(4, True, 8, 1), (2, 4, 2, 2)),
    "squeeze": (Squeeze, (2, 2, 4, 4)),
    "logit": (LogitPreprocess, (2, 1, 4, 4)),
}


def make_layer(name, seed=0):
    factory, shape = LAYERS[name]
    layer = randomise(factory().double(), seed=seed + 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=DT) if name == "logit" else torch.randn(shape, generator=gen, dtype=DT)
    return layer, x


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_log_det_matches_autograd_jacobian(name):
    layer, x = make_layer(name)
    B, D = x.shape[0], x[0].numel()
    y, log_det = layer(x)
    assert y.shape[0] == B and y[0].numel() == D and log_det.shape == (B,)
    J = jacobian(lambda v: layer(v.view(x.shape))[0].reshape(B, D), x.reshape(B, D))  # [B, D, B, D]
    for b in range(B):
        for c in range(B):  # images do not interact (no batch norm): off-diagonal blocks vanish
            if c != b:
                assert J[b, :, c].abs().max().item() == 0.0
        sign, logabsdet = torch.linalg.slogdet(J[b, :, b])
        assert sign.item() != 0
        assert abs(log_det[b].item() - logabsdet.item()) < 1e-9
    if name.startswith(("checker", "channel")):
        assert log_det.abs().min().item() > 0.1  # randomised: the log-det term is really exercised


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_inverse(name):
    layer, x = make_layer(name, seed=3)
    y, _ = layer(x)
    assert (layer.inverse(y) - x).abs().max().item() < 1e-12
    if name != "logit":
        assert (y - x.reshape(y.shape)).abs().max().item() > 1e-2  # not the identity


def test_model_log_density_matches_autograd_jacobian():
    """1x8x8: two scales (latents 2x4x4, 4x2x2, 4x2x2) and 4 final couplings; log p(y) = sum log N(z) +
    log|det dz/dy| with the Jacobian from autograd and the normal density written here."""
    model = randomise(RealNVP(levels=16, hidden_channels=8, num_blocks=1, image_shape=(1, 8, 8)).double(), std=0.1)
    assert model.latent_shapes == [(2, 4, 4), (4, 2, 2), (4, 2, 2)]
    y = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=DT)

    def to_z(v):  # y [64] -> z [64]: the pre-processing, the flow, the factored-out latents concatenated
        zs, _ = model.f(model.preprocess(v.view(1, 1, 8, 8))[0])
        return torch.cat([z.flatten() for z in zs])

    log_p, log_det = model.log_prob_continuous(y, return_log_det=True)
    for b in range(2):
        J = jacobian(to_z, y[b].flatten())  # [64, 64]
        logabsdet = torch.linalg.slogdet(J)[1].item()
        assert abs(log_det[b].item() - logabsdet) < 1e-8
        expected = hand_log_normal(to_z(y[b].flatten()).view(1, -1)).item() + logabsdet
        assert abs(log_p[b].item() - expected) < 1e-8
    flow_only = log_det - hand_logit_terms(y)[1]
    assert flow_only.abs().min().item() > 0.1  # the couplings contribute, not only the pre-processing


@pytest.mark.parametrize("dtype,image_shape,std,tol", [(DT, (1, 8, 8), 0.1, 1e-12),
                                                       (torch.float32, (1, 28, 28), 0.05, 1e-5)],
                         ids=["float64-1x8x8", "float32-1x28x28"])
def test_model_inverse(dtype, image_shape, std, tol):
    model = randomise(RealNVP(hidden_channels=8, num_blocks=1, image_shape=image_shape), std=std).to(dtype)
    y = torch.rand(3, *image_shape, generator=torch.Generator().manual_seed(1), dtype=DT).to(dtype)
    w, _ = model.preprocess(y)
    zs, _ = model.f(w)
    assert [tuple(z.shape[1:]) for z in zs] == model.latent_shapes and all(z.dtype == dtype for z in zs)
    assert sum(z[0].numel() for z in zs) == math.prod(image_shape)
    assert (model.f_inverse(zs) - w).abs().max().item() < tol * (1 + w.abs().max().item())
    assert (model.preprocess.inverse(model.f_inverse(zs)) - y).abs().max().item() < tol
    assert (zs[-1] - w.mean()).abs().max().item() > 1e-2  # the flow moved something


def test_density_mass_quadrature_equals_monte_carlo():
    """Normalisation by a change-of-variables identity. y in [0,1]^D maps onto the box w in [-BOX, BOX]^D, so
    integral_[0,1]^D p(y) dy = P_{z ~ N(0,I)}(f^-1(z) in the box): the left side by Gauss-Legendre quadrature
    (10^4 nodes) of exp(log_prob_continuous), the right by Monte Carlo through the inverse flow. For the
    identity flow (at initialisation) the mass is exactly (erf(BOX / sqrt 2))^D: the density integrates to 1
    over R^D in w, and to this sub-unit mass over [0,1]^D (the paper's alpha pre-processing)."""
    nodes, weights = gauss_legendre(10, 4)
    identity = RealNVP(hidden_channels=4, num_blocks=1, image_shape=(1, 2, 2), num_scales=1, final_couplings=2)
    with torch.no_grad():
        mass_id = (identity.double().log_prob_continuous(nodes.view(-1, 1, 2, 2)).exp() * weights).sum().item()
        assert abs(mass_id - math.erf(BOX / math.sqrt(2)) ** 4) < 1e-5
        model = tiny_model()
        mass = (model.log_prob_continuous(nodes.view(-1, 1, 2, 2)).exp() * weights).sum().item()
        gen, n = torch.Generator().manual_seed(7), 200_000  # float32 here: 10x faster convs on the CPU
        zs = [torch.randn(n, *shape, generator=gen) for shape in model.latent_shapes]
        inside = (copy.deepcopy(model).float().f_inverse(zs).abs() <= BOX).flatten(1).all(1).double().mean().item()
    assert 0.5 < mass < 0.97  # the randomised flow moves mass out of the box
    assert abs(mass - inside) < 5 * math.sqrt(inside * (1 - inside) / n) + 1e-3


def test_dequantization_bound_below_discrete_log_likelihood():
    """D = 4 pixels, L = 2 levels, all 16 images: log P(x) = log integral over the cell [x/L, (x+1)/L)^D of p
    and the bound E_u[log p((x + u)/L)] - D log L, both by quadrature (Jensen: bound <= log P(x)); the model's
    dequantized_nll (Monte Carlo over u) agrees with minus the bound; the cells' probabilities sum to <= 1."""
    model, L, D = tiny_model(), 2, 4
    u, weights = gauss_legendre(6, 4)  # [1296, 4] nodes on [0, 1)^4
    imgs = torch.cartesian_prod(*[torch.arange(L)] * D)  # [16, 4] all images
    with torch.no_grad():
        y = (imgs[:, None, :] + u[None]) / L  # [16, 1296, 4]
        log_p = model.log_prob_continuous(y.view(-1, 1, 2, 2)).view(16, -1)  # [16, 1296]
    log_P = torch.log((log_p.exp() * weights).sum(1)) - D * math.log(L)  # cell volume L^-D
    bound = (log_p * weights).sum(1) - D * math.log(L)
    std = ((log_p - bound[:, None] - D * math.log(L)) ** 2 * weights).sum(1).sqrt()  # of log p over u
    assert (bound < log_P).all() and (log_P - bound).max().item() > 1e-3
    assert log_P.exp().sum().item() <= 1.0
    reps, draws = 256, 4
    torch.manual_seed(0)
    nll = dequantized_nll(model, imgs.view(16, 1, 2, 2).repeat(reps, 1, 1, 1), draws=draws).view(reps, 16)
    assert nll.dtype == DT
    estimate = -nll.mean(0)  # [16]
    assert ((estimate - bound).abs() <= 5 * std / math.sqrt(reps * draws) + 1e-3).all()
    assert (estimate < log_P).all()


@pytest.mark.parametrize("levels", [2, 16, 256])
def test_forward_terms_and_the_D_log_L_constant(levels):
    """At initialisation the flow is the identity, so log p(y) = sum over pixels of log N(logit s) +
    log((1 - 2 alpha) / (s (1 - s))), written here; nll_nats = -(log p(y) - 784 log L) for the same u
    (reseeding the global RNG), bpd = nll_nats / (784 ln 2), and nll + log p(y) is exactly 784 log L."""
    model = RealNVP(levels=levels, hidden_channels=4, num_blocks=1)
    imgs = torch.randint(0, levels, (3, 1, 28, 28), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    out = model(imgs)
    torch.manual_seed(5)
    y = (imgs.double() + torch.rand(imgs.shape).double()) / levels
    w, log_dw = hand_logit_terms(y)
    hand_log_p = hand_log_normal(w) + log_dw  # [3]
    const = 784 * math.log(levels)
    assert abs(out["nll_nats"].item() - (const - hand_log_p.mean().item())) < 1e-5 * const
    assert abs(out["logdet_nats"].item() - log_dw.mean().item()) < 1e-5 * abs(log_dw.mean().item())
    assert abs(out["bpd"].item() - out["nll_nats"].item() / (784 * math.log(2))) < 1e-6
    log_p = model.log_prob_continuous(y.float()).double().mean().item()
    assert abs(out["nll_nats"].item() + log_p - const) < 1e-6 * abs(log_p) + 1e-3
    torch.manual_seed(5)
    per_image = dequantized_nll(model, imgs)
    assert (per_image - (const - hand_log_p)).abs().max().item() < 1e-5 * const


def test_sampling():
    model = RealNVP(levels=16, hidden_channels=4, num_blocks=1)
    at_init = model.sample(3, temperature=0.0)  # z = 0 -> w = 0 -> y = 1/2 -> level L/2 for the identity flow
    assert at_init.shape == (3, 1, 28, 28) and at_init.dtype == torch.long and (at_init == 8).all()
    randomise(model, std=0.2)
    model.float()
    x = model.sample(5)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.long
    assert x.min().item() >= 0 and x.max().item() <= 15 and x.unique().numel() > 2
    assert torch.equal(model.sample(2, temperature=0.0), model.sample(2, temperature=0.0))
    torch.manual_seed(3)
    first = model.sample(2)
    torch.manual_seed(3)
    assert torch.equal(first, model.sample(2))  # the global RNG only
    imgs = torch.randint(0, 16, (2, 1, 28, 28))
    torch.manual_seed(4)
    with torch.random.fork_rng():
        model.sample(2)
    after = model(imgs)["nll_nats"].item()
    torch.manual_seed(4)
    assert model(imgs)["nll_nats"].item() == after
    assert model.device == torch.device("cpu")


def test_default_size_and_a_few_steps_lower_the_loss():
    default = RealNVP()
    assert sum(p.numel() for p in default.parameters()) == 632_545  # the docstring's count
    assert default.latent_shapes == [(2, 14, 14), (4, 7, 7), (4, 7, 7)]
    with pytest.raises(ValueError):
        RealNVP(num_scales=3)  # 7x7 cannot be squeezed
    torch.manual_seed(0)
    model = RealNVP(levels=16, hidden_channels=8, num_blocks=1)
    imgs = torch.zeros(4, 1, 28, 28, dtype=torch.long)
    imgs[:, :, 8:20, 8:20] = 15  # a bright square on black

    def loss_at_fixed_noise():
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(1)
            out = model(imgs)
        assert abs(out["bpd"].item() - out["nll_nats"].item() / (784 * math.log(2))) < 1e-6
        return out["nll_nats"].item()

    before = loss_at_fixed_noise()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(8):
        opt.zero_grad()
        model(imgs)["nll_nats"].backward()
        opt.step()
    assert loss_at_fixed_noise() < before - 1.0
