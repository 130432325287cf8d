"""Guards on the flows' corners and on summarize (see test_core_guards.py): parameter splits, tiny and saturated
planar layers, a radial layer by hand, error messages, and summarize on hand-made per-image values."""
import math

import pytest
import torch
from torch.autograd.functional import jacobian

from dgmkit.vae import flows
from dgmkit.vae.estimates import summarize
from hand_maths import BITS

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- flows: the corners the composition tests do not reach ------------------------------------------

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


# ---- summarize on hand-made per-image values ------------------------------------------------------------

def per_image_values(n, kl_per_dim=True):
    gen = torch.Generator().manual_seed(n)
    rec = 100 + 10 * torch.rand(n, generator=gen, dtype=torch.float64)
    kl = 5 + torch.rand(n, generator=gen, dtype=torch.float64)
    mean = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return {"nelbo": rec + kl, "rec": rec, "kl": kl, "iw": -(rec + kl - 1.5), "labels": torch.arange(n) % 2,
            "mean": mean, "kl_per_dim": kl.unsqueeze(1).expand(n, 3) / 3 if kl_per_dim else None,
            "dims": 784, "num_samples": 7}


@pytest.mark.parametrize("n", [1, 2, 5])
def test_summarize_by_hand(n):
    values = per_image_values(n)
    summary = summarize(values)
    nelbo = values["nelbo"]
    se = nelbo.std().item() / math.sqrt(n) if n > 1 else None
    assert (summary["num_images"], summary["iw_samples"]) == (n, 7)
    assert summary["nelbo_nats"] == pytest.approx(nelbo.mean().item(), rel=1e-12)
    assert summary["bpd"] == pytest.approx(nelbo.mean().item() / BITS, rel=1e-12)
    assert summary["iw_nats"] == pytest.approx(nelbo.mean().item() - 1.5, rel=1e-12)
    assert summary["iw_bpd"] == pytest.approx((nelbo.mean().item() - 1.5) / BITS, rel=1e-12)
    assert summary["gap_bpd"] == pytest.approx(1.5 / BITS, rel=1e-9)
    assert summary["rec_nats"] == pytest.approx(values["rec"].mean().item(), rel=1e-12)
    assert summary["kl_nats"] == pytest.approx(values["kl"].mean().item(), rel=1e-12)
    if n == 1:
        assert summary["bpd_se"] is summary["nelbo_nats_se"] is summary["iw_bpd_se"] is None
    else:
        assert summary["nelbo_nats_se"] == pytest.approx(se, rel=1e-9)
        assert summary["bpd_se"] == pytest.approx(se / BITS, rel=1e-9)
        assert summary["gap_bpd_se"] == pytest.approx(0.0, abs=1e-9)  # the same gap for every image
    variance = values["mean"].var(dim=0) if n > 1 else torch.zeros(3)  # one image: no spread, nothing active
    latents = summary["latents"]
    assert latents["posterior_mean_var"] == pytest.approx(variance.tolist(), rel=1e-12)
    assert latents["z_dim"] == 3 and summary["active_units"] == int((variance > 0.01).sum())
    assert latents["kl_per_dim"] == pytest.approx([values["kl"].mean().item() / 3] * 3, rel=1e-12)
    counts = [c["count"] for c in summary["per_class"].values()]
    assert counts == [(n + 1) // 2, n // 2] + [0] * 8
    assert summary["per_class"]["T-shirt/top"]["bpd"] == pytest.approx(nelbo[0::2].mean().item() / BITS, rel=1e-12)
    assert summary["per_class"]["Bag"] == {"count": 0, "bpd": None, "bpd_se": None, "iw_bpd": None, "iw_bpd_se": None}


def test_a_unit_is_active_only_strictly_above_the_threshold():
    values = per_image_values(4, kl_per_dim=False)
    variance = values["mean"].var(dim=0)
    at = summarize(values, active_threshold=variance[0].item())
    assert 0 not in at["latents"]["active_dims"] and at["latents"]["active_threshold"] == variance[0].item()
    assert at["latents"]["kl_per_dim"] is None
    below = summarize(values, active_threshold=variance.min().item() / 2)
    assert below["active_units"] == 3 and below["latents"]["active_dims"] == [0, 1, 2]


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
