"""Tests of dgmkit/vae/flows.py: log-determinants against autograd Jacobians, invertibility constraints,
composition, broadcasting, and a change-of-variables density check. All in float64; every expected
value comes from autograd, quadrature or a closed form written here, never from the module itself."""
import math

import pytest
import torch
from torch.autograd.functional import jacobian

from dgmkit.vae import flows
from dgmkit.vae.flows import FLOWS, flow, param_count, planar, radial

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def softplus(x):
    """Closed-form softplus log(1 + e^x) for a Python float (independent of F.softplus)."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def assert_close(actual, expected, atol):
    """Same shape and max |actual - expected| <= atol (torch.testing's first call costs ~1 s of imports)."""
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= atol


def layer_fn(kind, params):
    """Single-layer map z [..., D] -> (f [..., D], log_det [...]) from a tuple of raw parameters."""
    return lambda z: (planar if kind == "planar" else radial)(z, *params)


def random_params(kind, d, gen):
    """Raw parameters of one layer for one sample: planar (u, w, b), radial (z0, alpha_raw, beta_raw)."""
    if kind == "planar":
        w = torch.randn(d, dtype=DT, generator=gen)                              # [D]
        u = torch.randn(d, dtype=DT, generator=gen)                              # [D]
        b = torch.randn((), dtype=DT, generator=gen)                             # []
        return u, w, b
    z0 = torch.randn(d, dtype=DT, generator=gen)                                 # [D]
    return z0, torch.randn((), dtype=DT, generator=gen), 2 * torch.randn((), dtype=DT, generator=gen)


def assert_logdet_matches_jacobian(fn, z, tol=1e-10):
    """log_det from fn(z) [D] equals log|det J| of the autograd Jacobian, with det J > 0."""
    _, log_det = fn(z)
    sign, logabs = torch.linalg.slogdet(jacobian(lambda x: fn(x)[0], z))          # J [D, D]
    assert sign.item() == 1.0
    assert torch.isfinite(log_det)
    assert abs(log_det.item() - logabs.item()) < tol


@pytest.mark.parametrize("kind", FLOWS)
@pytest.mark.parametrize("d", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_det_matches_autograd_jacobian(kind, d, seed):
    gen = torch.Generator().manual_seed(1000 * d + seed)
    for _ in range(3):
        params = random_params(kind, d, gen)
        assert_logdet_matches_jacobian(layer_fn(kind, params), 1.5 * torch.randn(d, dtype=DT, generator=gen))


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_planar_constraint_repairs_non_invertible_raw_params(d, scale):
    direction = torch.randn(d, dtype=DT, generator=torch.Generator().manual_seed(d))  # [D]
    # ‖w‖ = scale, u = -3w: wᵀu = -3 scale² (< -1 for scale ≥ 1, so the raw map folds).
    w = scale * direction / direction.norm()                                     # [D]
    u = -3.0 * w                                                                 # [D]
    # Read û off the map itself: f(0) = û tanh(b) when z = 0.
    b = torch.tensor(1.0, dtype=DT)
    f0, _ = planar(torch.zeros(d, dtype=DT), u, w, b)
    u_hat = f0 / math.tanh(1.0)                                                  # [D]
    wu = float(w @ u)
    assert float(w @ u_hat) > -1.0
    assert float(w @ u_hat) == pytest.approx(-1.0 + softplus(wu), rel=1e-7, abs=1e-12)  # appendix A.1
    gen = torch.Generator().manual_seed(7)
    for _ in range(5):
        assert_logdet_matches_jacobian(layer_fn("planar", (u, w, b)), torch.randn(d, dtype=DT, generator=gen))
    # Where the unconstrained map folds (wᵀz + b = 0, h' = 1) the constrained one is tightest:
    # det = 1 + wᵀû = softplus(wᵀu) (e^-27 for scale 3), which the module must still resolve.
    z_fold = -b * w / (w @ w)                                                    # [D]
    _, log_det = planar(z_fold, u, w, b)
    assert log_det.item() == pytest.approx(math.log(softplus(wu)), rel=1e-6)
    if scale <= 1.0:  # for scale 3, det J ~ 2e-12 from O(1) entries: slogdet itself is only ~1e-4 accurate
        assert_logdet_matches_jacobian(layer_fn("planar", (u, w, b)), z_fold)


# The first two planar layers have wu < -1: unconstrained, z + u tanh(wz + b) would fold (f' = 1 + wu < 0
# where wz + b = 0), so only the module's constraint on u keeps them increasing.
ONE_D = [("planar", (-3.0, 1.0, 0.2)), ("planar", (-12.0, 2.0, -0.5)), ("planar", (2.0, 1.5, 0.3)),
         ("radial", (0.3, 0.5, -30.0)), ("radial", (-1.0, 2.0, -5.0)), ("radial", (0.0, -1.0, 1.0))]


def one_d(kind, raw):
    """1-D layer from three raw floats: planar (u, w, b) or radial (z0, alpha_raw, beta_raw)."""
    a, c, e = (torch.tensor(v, dtype=DT) for v in raw)
    return layer_fn(kind, (a.reshape(1), c.reshape(1), e) if kind == "planar" else (a.reshape(1), c, e))


@pytest.mark.parametrize("kind,raw", ONE_D)
def test_one_d_flow_is_strictly_increasing(kind, raw):
    fn = one_d(kind, raw)
    z = torch.linspace(-6, 6, 20001, dtype=DT).unsqueeze(-1).requires_grad_()     # [N, 1]
    f, _ = fn(z)                                                                 # [N, 1]
    assert bool((f[1:, 0] - f[:-1, 0] > 0).all())
    (deriv,) = torch.autograd.grad(f.sum(), z)                                   # [N, 1] f'(z), map is per-row
    assert bool((deriv > 0).all())


@pytest.mark.parametrize("kind", FLOWS)
def test_flow_equals_hand_composition_and_jacobian(kind):
    gen = torch.Generator().manual_seed(3)
    d, length = 3, 3
    p = param_count(kind, d)
    params = torch.randn(4, length * p, dtype=DT, generator=gen)                 # [B, L*P]
    z = torch.randn(4, d, dtype=DT, generator=gen)                               # [B, D]
    z_l, log_det = flow(kind, z, params, length)
    zz, total = z, torch.zeros(4, dtype=DT)
    for l in range(length):
        q = params[:, l * p:(l + 1) * p]                                         # [B, P]
        args = (q[:, :d], q[:, d:2 * d], q[:, 2 * d]) if kind == "planar" else (q[:, :d], q[:, d], q[:, d + 1])
        zz, ld = layer_fn(kind, args)(zz)
        total = total + ld
    assert_close(z_l, zz, 1e-14)
    assert_close(log_det, total, 1e-13)
    for i in range(4):
        composed = lambda x, i=i: flow(kind, x, params[i], length)[0]            # [D] -> [D]
        sign, logabs = torch.linalg.slogdet(jacobian(composed, z[i]))
        assert sign.item() == 1.0
        assert abs(log_det[i].item() - logabs.item()) < 1e-10


@pytest.mark.parametrize("kind", FLOWS)
def test_broadcast_over_importance_samples(kind):
    gen = torch.Generator().manual_seed(4)
    k, b, d, length = 5, 3, 4, 2
    params = torch.randn(b, length * param_count(kind, d), dtype=DT, generator=gen)  # [B, P]
    z = torch.randn(k, b, d, dtype=DT, generator=gen)                            # [K, B, D]
    z_l, log_det = flow(kind, z, params.unsqueeze(0), length)                    # [K, B, D], [K, B]
    assert z_l.shape == (k, b, d) and log_det.shape == (k, b)
    for i in range(k):
        zi, li = flow(kind, z[i], params, length)                                # [B, D], [B]
        assert_close(z_l[i], zi, 1e-14)
        assert_close(log_det[i], li, 1e-14)


@pytest.mark.parametrize("kind", FLOWS)
def test_length_zero_is_identity(kind):
    z = torch.randn(2, 3, 4, dtype=DT)                                           # [K, B, D]
    z_l, log_det = flow(kind, z, torch.zeros(3, 0, dtype=DT), 0)
    assert torch.equal(z_l, z)
    assert log_det.shape == (2, 3) and log_det.dtype == DT and bool((log_det == 0).all())


def test_radial_very_negative_beta_raw_keeps_beta_above_minus_alpha():
    alpha_raw, beta_raw = torch.tensor(0.4, dtype=DT), torch.tensor(-30.0, dtype=DT)
    alpha = softplus(0.4)
    z0 = torch.zeros(3, dtype=DT)                                                # [D]; f - z0 = f exactly
    direction = torch.tensor([0.6, 0.0, 0.8], dtype=DT)                          # unit vector
    for r in (1e-12, 1e-6, 1e-3, 0.5, 4.0):
        z = z0 + r * direction                                                   # [D], ‖z − z0‖ = r
        f, log_det = radial(z, z0, alpha_raw, beta_raw)
        assert bool(torch.isfinite(f).all()) and torch.isfinite(log_det)
        ratio = float((f - z0) @ direction) / r                                  # 1 + βh(α, r), eq. 14
        assert ratio > 0 and (ratio - 1.0) * (alpha + r) > -alpha                # β > -α
        if r <= 1e-3:
            # α + β = softplus(beta_raw) ≈ 9.4e-14 (appendix A.2); α + β = ratio (α + r) - r.
            assert ratio * (alpha + r) - r == pytest.approx(softplus(-30.0), rel=1e-3)
        if r >= 1e-3:
            assert_logdet_matches_jacobian(layer_fn("radial", (z0, alpha_raw, beta_raw)), z)


def test_planar_with_zero_w_is_finite():
    u = torch.tensor([1.0, -2.0, 0.5], dtype=DT, requires_grad=True)             # [D]
    w = torch.zeros(3, dtype=DT, requires_grad=True)                             # [D]
    b = torch.tensor(0.7, dtype=DT, requires_grad=True)
    z = torch.randn(6, 3, dtype=DT)                                              # [N, D]
    f, log_det = planar(z, u, w, b)
    assert bool(torch.isfinite(f).all()) and bool(torch.isfinite(log_det).all())
    # With w = 0 the layer is a shift by u tanh(b) and volume-preserving.
    assert_close(f, z + u.detach() * math.tanh(0.7), 1e-12)
    assert_close(log_det, torch.zeros(6, dtype=DT), 1e-12)
    grads = torch.autograd.grad(f.sum() + log_det.sum(), (u, w, b))
    assert all(bool(torch.isfinite(g).all()) for g in grads)


# Moderate parameters: near-singular ones (f' ~ 1e-11 somewhere) would need a far finer grid.
DENSITY = [("planar", (-3.0, 1.0, 0.2)), ("planar", (2.0, 1.5, 0.3)), ("planar", (-1.0, 3.0, -0.5)),
           ("radial", (0.3, 0.5, -3.0)), ("radial", (-1.0, 2.0, -2.0)), ("radial", (0.0, -1.0, 1.0))]


@pytest.mark.parametrize("kind,raw", DENSITY)
def test_change_of_variables_density_integrates_to_one(kind, raw):
    fn = one_d(kind, raw)
    z0 = torch.linspace(-12, 12, 20001, dtype=DT).unsqueeze(-1)                  # [N, 1] grid for z0 ~ N(0, 1)
    z_l, log_det = fn(z0)                                                        # [N, 1], [N]
    log_n = -0.5 * z0[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)                  # [N] log N(z0; 0, 1)
    # ∫ p_L(z_L) dz_L by the trapezoid rule on the mapped (non-uniform) grid: the measure comes from
    # differences of f, the density log p_L(f(z0)) = log N(z0) - log_det from the module's log_det.
    total = torch.trapezoid((log_n - log_det).exp(), z_l[:, 0])
    assert total.item() == pytest.approx(1.0, abs=1e-5)                         # quadrature error ~ h²
    # The check has teeth: leaving the log-det out misses by far more than the tolerance.
    assert abs(torch.trapezoid(log_n.exp(), z_l[:, 0]).item() - 1.0) > 0.1


@pytest.mark.parametrize("kind", FLOWS)
def test_float32_in_float32_out(kind):
    gen = torch.Generator().manual_seed(5)
    params = torch.randn(6, 2 * param_count(kind, 3), dtype=DT, generator=gen)  # [B, 2P]
    z = torch.randn(6, 3, dtype=DT, generator=gen)                               # [B, D]
    z64, ld64 = flow(kind, z, params, 2)
    z32, ld32 = flow(kind, z.float(), params.float(), 2)
    assert z32.dtype == ld32.dtype == torch.float32
    assert_close(z32.double(), z64, 1e-5)
    assert_close(ld32.double(), ld64, 1e-4)


@pytest.mark.parametrize("kind,d,expected", [("planar", 1, 3), ("planar", 20, 41), ("radial", 1, 3),
                                              ("radial", 20, 22)])
def test_param_count(kind, d, expected):
    assert param_count(kind, d) == expected


def test_errors():
    z = torch.zeros(2, 3, dtype=DT)                                              # [B, D]
    with pytest.raises(ValueError, match="unknown flow kind"):
        flow("sylvester", z, torch.zeros(2, 7, dtype=DT), 1)
    with pytest.raises(ValueError, match="unknown flow kind"):
        param_count("iaf", 3)
    with pytest.raises(ValueError, match="needs params"):
        flow("planar", z, torch.zeros(2, 8, dtype=DT), 1)                        # planar needs 7 per layer
    with pytest.raises(ValueError, match="needs params"):
        flow("radial", z, torch.zeros(2, 5, dtype=DT), 2)                        # radial needs 2 x 5
    with pytest.raises(ValueError, match="non-negative"):
        flow("radial", z, torch.zeros(2, 0, dtype=DT), -1)


# ---- the corners the composition tests do not reach (guards of a mutation-testing run, tests/mutation/) ------

def test_flow_splits_planar_parameters_as_u_w_b_for_any_z_dim():
    """z_dim = 2 (P = 5): layer l uses params[l*5:(l+1)*5] as u = [:2], w = [2:4], b = [4]."""
    gen = torch.Generator().manual_seed(0)
    z, params = torch.randn(4, 2, generator=gen, dtype=torch.float64), torch.randn(4, 10, generator=gen, dtype=torch.float64)
    expected, total = z, 0.0
    for l in range(2):
        p = params[:, 5 * l:5 * l + 5]
        expected, log_det = flows.planar(expected, p[:, :2], p[:, 2:4], p[:, 4])
        total = total + log_det
    z_out, log_det = flows.flow("planar", z, params, 2)
    torch.testing.assert_close(z_out, expected)
    torch.testing.assert_close(log_det, total)


def test_planar_log_det_with_a_tiny_w_matches_the_jacobian():
    """||w||^2 = 1e-10 < the floor 1e-8 (q = 0.01), w.u = 0.1: the branch of 1 + w.u_hat for tiny w."""
    u = torch.tensor([1e4, -3.0], dtype=torch.float64)
    w = torch.tensor([1e-5, 0.0], dtype=torch.float64)
    b = torch.tensor(0.3, dtype=torch.float64)
    z = torch.tensor([0.4, -1.2], dtype=torch.float64)
    _, log_det = flows.planar(z, u, w, b)
    sign, log_abs = torch.linalg.slogdet(jacobian(lambda x: flows.planar(x, u, w, b)[0], z))
    assert sign.item() == 1.0
    assert log_det.item() == pytest.approx(log_abs.item(), rel=1e-9, abs=1e-12)


def test_planar_is_finite_for_a_saturated_tanh():
    """w.z + b = 60 in float32: h' = sech^2 underflows to 0 and log|det| = log(tanh^2 + 0) = 0, no inf / inf."""
    z = torch.tensor([[30.0, 0.0]])
    f, log_det = flows.planar(z, torch.tensor([0.5, 0.5]), torch.tensor([2.0, 0.0]), torch.tensor(0.0))
    assert torch.isfinite(f).all() and log_det.item() == pytest.approx(0.0, abs=1e-6)


def test_flow_error_messages_name_the_needed_size():
    z = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match=r"planar flow of length 2 on z_dim 2 needs params\[\.\.\., 10\] \(2 x 5\), "
                                         r"got last dim 7$"):
        flows.flow("planar", z, torch.zeros(1, 2, 7), 2)
    with pytest.raises(ValueError, match="non-negative int"):
        flows.flow("planar", z, torch.zeros(1, 2, 5), True)  # a bool is not a length
    with pytest.raises(ValueError, match="0-d tensor"):
        flows.flow("planar", torch.tensor(1.0), torch.zeros(5), 1)


def test_radial_layer_by_hand():
    """f(z) = z + beta (z - z0) / (alpha + r), r = |z - z0|, alpha = softplus(a), beta = -alpha + softplus(b)."""
    z, z0 = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64), torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)
    a, b = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)
    alpha, r = math.log1p(math.exp(0.3)), (z - z0).norm().item()
    beta = -alpha + math.log1p(math.exp(-0.4))
    h = 1 / (alpha + r)
    f, log_det = flows.radial(z, z0, a, b)
    torch.testing.assert_close(f, z + beta * h * (z - z0))
    expected = 2 * math.log(1 + beta * h) + math.log(1 + beta * h - beta * h ** 2 * r)  # (d - 1) log(1 + bh) + ...
    assert log_det.item() == pytest.approx(expected, rel=1e-12)


def test_flow_takes_kind_and_sizes_by_value():
    """The kind as argparse gives it (built at run time) selects planar; a long flow (410 > 256 parameters, past
    CPython's small-int cache) is accepted: both compared by value."""
    gen = torch.Generator().manual_seed(1)
    z, params = torch.randn(2, 3, generator=gen), torch.randn(2, 14, generator=gen)
    built = flows.flow("".join(["pla", "nar"]), z, params, 2)
    literal = flows.flow("planar", z, params, 2)
    assert torch.equal(built[0], literal[0]) and torch.equal(built[1], literal[1])
    z_long, log_det = flows.flow("planar", torch.zeros(1, 20), 0.01 * torch.randn(1, 410, generator=gen), 10)
    assert z_long.shape == (1, 20) and torch.isfinite(log_det).all()


@pytest.mark.parametrize("kind,one", [("planar", 3), ("radial", 3)])
def test_param_count_refuses_a_latent_space_without_dimensions(kind, one):
    """param_count's guard: z_dim 0 (or less) is refused with ValueError, z_dim 1 is the smallest allowed (planar
    2*1 + 1 = 3: u, w, b; radial 1 + 2 = 3: z0, alpha, beta). Kills `int(z_dim) < 0` (z_dim 0 accepted)."""
    for bad in (0, -1):
        with pytest.raises(ValueError, match="z_dim must be a positive integer"):
            param_count(kind, bad)
    assert param_count(kind, 1) == one
