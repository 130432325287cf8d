"""evaluate.py: the ELBO and importance-weighted bounds against numerical integration, statistics, the CLI
(bad inputs: test_bad_inputs_runs.py).

The bound tests use a VAE with z_dim = 1, where log p(x) = log int p(x|z) p(z) dz is computed by
quadrature on a dense grid. Its decoder's first layer is scaled up (x300) so that p(x|z) depends
strongly on z (log p(x|z) spans ~250 nats over the grid, posterior std ~0.3): with the random-init
decoder p(x|z) hardly depends on z and every estimate would agree trivially.
Monte Carlo tolerances are 4 standard errors (seeded, so the tests are deterministic).
"""
import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import quantized_images, run_script
from dgmkit.data.datasets import CLASSES
from dgmkit.vae.bounds import elbo_per_image, iw_log_likelihood
from dgmkit.vae.estimates import evaluate_loader, summarize
from dgmkit.vae.model import VAE
from evaluate import main, parse_args
from fmnist import fmnist
from utils import log_normal_from_eps, log_px_given_z, log_standard_normal

GRID = 4001  # quadrature points on [-8, 8]
Z_MAX = 8.0


pytestmark = pytest.mark.usefixtures("one_thread")


def mean_se(values):
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


def set_encoder_output(model, mean, log_std):
    """Make q(z|x) = N(mean, exp(log_std)^2) for every image (z_dim entries each)."""
    last = model.encoder.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([*mean, *log_std]))


@pytest.fixture(scope="module")
def z1():
    """A z_dim = 1 VAE, two images, and the quadrature values of log p(x) and of the posterior."""
    torch.manual_seed(0)
    model = VAE(num_filters=4, z_dim=1, lr=1e-3).eval()
    with torch.no_grad():
        model.decoder.linear[0].weight.mul_(300.0)
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
    # negligible mass near the ends of the grid.
    assert (log_lik.amax(1) - log_lik.amin(1) > 50).all()
    assert (post_std > 50 * dz).all() and (post_std < 0.6).all()
    assert (post[:, :GRID // 4].sum(1) < 1e-12).all() and (post[:, -GRID // 4:].sum(1) < 1e-12).all()
    return {"model": model, "imgs": imgs, "zs": zs, "dz": dz, "log_joint": log_joint, "log_px": log_px,
            "post_mean": post_mean, "post_std": post_std}


def poor_proposal(z1):
    """The random-init encoder with its output shifted: q(z|x) ~ N(0.88, 0.51^2) for both images.

    Three posterior standard deviations off the posterior (mean ~-0.06, std ~0.3) and, unlike the
    random-init q ~ N(-0.1, 1.03^2), not close to the prior either, so p(z) / q(z) matters.
    """
    model = copy.deepcopy(z1["model"])
    with torch.no_grad():
        model.encoder.net[-1].bias += torch.tensor([1.0, -0.7])
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


# ---- the densities and the one-sample ELBO -----------------------------------------------------------

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


# ---- against numerical integration (z_dim = 1) ------------------------------------------------------

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


# ---- dataset statistics --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = VAE(num_filters=4, z_dim=3, lr=1e-3)
    with torch.no_grad():  # latent 2's mean is constant (inactive); latents 0 and 1 vary across images
        model.encoder.net[-1].weight[2].zero_()
        model.encoder.net[-1].weight[:2].mul_(200.0)
    return model


def batches(imgs, labels, size):
    return [(imgs[i:i + size], labels[i:i + size]) for i in range(0, len(imgs), size)]


def test_summary_statistics(small_model):
    imgs, labels = quantized_images(320, seed=2)
    small = summarize(evaluate_loader(small_model, batches(imgs[:20], labels[:20], 8), num_samples=2, seed=0))
    per_image = evaluate_loader(small_model, batches(imgs, labels, 64), num_samples=2, seed=0)
    large = summarize(per_image)
    assert (small["num_images"], large["num_images"]) == (20, 320)

    # Standard errors: std / sqrt(N) over images, so 16x the images gives about 1/4 of the SE.
    for prefix, loss in (("nelbo", per_image["nelbo"]), ("iw", -per_image["iw"])):
        bpd = "bpd" if prefix == "nelbo" else "iw_bpd"
        assert large[f"{prefix}_nats_se"] == pytest.approx(loss.std().item() / math.sqrt(320), rel=1e-9)
        assert large[f"{prefix}_nats"] == pytest.approx(loss.mean().item(), rel=1e-12)
        assert large[bpd] == pytest.approx(large[f"{prefix}_nats"] / 784 / math.log(2), rel=1e-12)
        assert large[f"{bpd}_se"] == pytest.approx(large[f"{prefix}_nats_se"] / 784 / math.log(2), rel=1e-12)
        assert large[f"{prefix}_nats_se"] < small[f"{prefix}_nats_se"] / 2
    assert large["nelbo_nats"] == pytest.approx(large["rec_nats"] + large["kl_nats"], rel=1e-12)
    assert large["gap_bpd"] == pytest.approx(large["bpd"] - large["iw_bpd"], rel=1e-9)

    # Per class: the count-weighted average of the class figures is the overall figure.
    per_class = large["per_class"]
    assert list(per_class) == list(CLASSES)
    assert [c["count"] for c in per_class.values()] == torch.bincount(labels, minlength=10).tolist()
    for key in ("bpd", "iw_bpd"):
        weighted = sum(c["count"] * c[key] for c in per_class.values() if c["count"]) / 320
        assert weighted == pytest.approx(large[key], rel=1e-12)

    # Latents: KL per dimension sums to the KL; latent 2's posterior mean never moves.
    latents = large["latents"]
    assert sum(latents["kl_per_dim"]) == pytest.approx(large["kl_nats"], rel=1e-9)
    mean_var = per_image["mean"].var(dim=0)
    assert latents["posterior_mean_var"] == pytest.approx(mean_var.tolist(), rel=1e-9)
    assert latents["posterior_mean_var"][2] < 1e-12 and min(latents["posterior_mean_var"][:2]) > 0.01
    assert large["active_units"] == 2 and latents["active_dims"] == [0, 1] and latents["z_dim"] == 3


def test_evaluation_is_seeded_and_leaves_the_caller_alone(small_model):
    imgs, labels = quantized_images(40, seed=5)
    loader = batches(imgs, labels, 16)
    small_model.train()
    torch.manual_seed(123)
    first = summarize(evaluate_loader(small_model, loader, num_samples=3, chunk_size=10, seed=1))
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)  # the caller's random stream is untouched
    assert small_model.training  # mode restored
    again = summarize(evaluate_loader(small_model, loader, num_samples=3, chunk_size=10, seed=1))
    assert again["iw_bpd"] == first["iw_bpd"] and again["bpd"] == first["bpd"]  # seeded
    assert (first["num_images"], first["iw_samples"]) == (40, 3)
    assert first["iw_bpd"] == pytest.approx(first["iw_nats"] / 784 / math.log(2))
    assert 0 < first["iw_bpd"] < first["bpd"] < 8


# ---- command line -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(finished_run, tmp_path_factory):
    """A copy of the shared finished run (micro_data: 20 test images), which evaluate.py may write into."""
    return Path(shutil.copytree(finished_run, tmp_path_factory.mktemp("eval") / "run"))


@pytest.mark.slow
def test_cli_writes_json_and_pictures(trained_run):
    result = run_script(["part1/evaluate.py", trained_run, "--iw_samples", "5", "--device", "cpu"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((trained_run / "eval_test.json").read_text())
    assert {"checkpoint", "epoch", "split", "num_images", "iw_samples", "bpd", "bpd_se", "iw_bpd", "iw_bpd_se",
            "gap_bpd", "gap_bpd_se", "rec_nats", "kl_nats", "nelbo_nats", "iw_nats", "active_units", "per_class",
            "latents", "per_image_iw_bpd", "pictures", "seed", "device", "wall_time_s"} <= set(report)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert report["checkpoint"].endswith("best.pt") and report["epoch"] == metrics["best_epoch"]
    assert report["split"] == "test" and (report["num_images"], report["iw_samples"]) == (20, 5)
    assert 0 < report["iw_bpd"] < 6 and 0 < report["bpd"] < 6 and report["iw_bpd_se"] > 0
    assert report["gap_bpd"] > -4 * report["gap_bpd_se"]  # IW(5) >= ELBO up to Monte Carlo error
    assert report["nelbo_nats"] == pytest.approx(report["rec_nats"] + report["kl_nats"])
    assert sum(report["per_image_iw_bpd"]) / 20 == pytest.approx(report["iw_bpd"], rel=1e-9)
    assert abs(report["bpd"] - metrics["test_bpd"]) < 4 * report["bpd_se"]  # same model, another draw of z
    assert sum(c["count"] for c in report["per_class"].values()) == 20
    # Active units, recomputed from the checkpoint's encoder: variance over the test images of each mean.
    model = VAE(num_filters=8, z_dim=2, lr=1e-3)
    model.load_state_dict(torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)["model"])
    test_imgs = torch.cat([x for x, _ in fmnist(json.loads((trained_run / "args.json").read_text())["data_dir"],
                                                 64, download=False)[2]])
    with torch.inference_mode():
        means = model.eval().encoder(test_imgs)[0]  # [20, 2]
    assert len(report["latents"]["kl_per_dim"]) == 2
    assert report["active_units"] == int((means.double().var(dim=0) > 0.01).sum())
    assert f"IW K=5 {report['iw_bpd']:.4f}" in result.stdout

    pad, size = 2, 28  # make_grid's layout
    assert report["pictures"] == {"reconstructions": "reconstructions_test.png",
                                  "interpolations": "interpolations_test.png"}
    with Image.open(trained_run / "reconstructions_test.png") as img:  # 2 rows of 8
        assert img.size == (pad + 8 * (size + pad), pad + 2 * (size + pad))
    with Image.open(trained_run / "interpolations_test.png") as img:  # 8 rows: x_a, 10 steps, x_b
        assert img.size == (pad + 12 * (size + pad), pad + 8 * (size + pad))
    events = EventAccumulator(str(trained_run)).Reload()
    assert {"eval_test/reconstructions", "eval_test/interpolations"} <= set(events.Tags()["images"])
    assert events.Scalars("eval_test/iw_bpd")[0].value == pytest.approx(report["iw_bpd"], rel=1e-6)


def test_checkpoint_path_and_val_split(trained_run, tiny_data):
    report = main(parse_args([str(trained_run / "checkpoints" / "last.pt"), "--split", "val", "--iw_samples", "2",
                              "--data_dir", str(tiny_data), "--device", "cpu", "--batch_size", "7"]))
    assert report["num_images"] == 30 and report["checkpoint"].endswith("last.pt")
    assert json.loads((trained_run / "eval_val.json").read_text())["iw_bpd"] == report["iw_bpd"]
    assert (trained_run / "reconstructions_val.png").is_file()
