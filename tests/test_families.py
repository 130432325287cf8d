"""Objectives (ELBO, IWAE) and posteriors (planar, radial flows) in the model, against values computed
independently: the assignment's loss bit for bit, hand-assembled single-sample bounds, the closed-form
KL, and log p(x) by quadrature for a z_dim = 1 model."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import train_torch
from conftest import PART1, REPO_ROOT, SMALL, history_without_time, only_run_dir, quantized_images, run_script, wait_for
from dgmkit.engine import hardware
from dgmkit.runs.checkpoints import load_checkpoint
from dgmkit.vae.bounds import iw_log_likelihood, log_weights, objective
from dgmkit.vae.model import VAE
from evaluate import load_model
from utils import KLD, log_px_given_z

pytestmark = pytest.mark.usefixtures("one_thread")


def images(num, seed):
    return quantized_images(num, seed)[0]  # [num, 1, 28, 28]


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


def test_flow_parameters_are_amortized_per_image():
    """The encoder produces the flow parameters from each image's features (not global constants)."""
    torch.manual_seed(0)
    model = VAE(4, 2, 1e-3, "radial", 3)
    _, _, params = model.encode(images(2, 4))
    assert params.shape == (2, 3 * (2 + 2))
    assert not torch.allclose(params[0], params[1])


def test_gradients_flow_through_the_logsumexp_to_every_part():
    torch.manual_seed(0)
    model = VAE(4, 2, 1e-3, "planar", 2)
    objective(model, images(3, 5), "iwae", 4)["loss"].backward()
    for name in ("flow_head.weight", "encoder.net.0.weight", "decoder.linear.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


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


# ---- end to end: every family through the CLI --------------------------------------------------------

FAMILIES = {"elbo-k2": ["--train_samples", "2"], "iwae-k3": ["--objective", "iwae", "--train_samples", "3"],
            "planar": ["--flow", "planar", "--flow_length", "2"], "radial": ["--flow", "radial", "--flow_length", "2"],
            "iwae-planar": ["--objective", "iwae", "--train_samples", "3", "--flow", "planar", "--flow_length", "2"]}
# conftest's SMALL run, narrower, with a sample grid before training and the final IW evaluation (K = 4)
FAMILY_SMALL = [*SMALL, "--num_filters", "4", "--sample_epochs", "0", "--final_iw_samples", "4"]


@pytest.fixture(scope="module")
def family_runs(tiny_data, tmp_path_factory):
    logs = tmp_path_factory.mktemp("families")
    runs = {}
    for name, flags in FAMILIES.items():
        train_torch.main(train_torch.parse_args(["--data_dir", str(tiny_data), "--log_dir", str(logs / name),
                                                 *FAMILY_SMALL, *flags]))
        runs[name] = only_run_dir(logs / name)
    return runs


def test_iwae_k1_trains_exactly_like_the_default(tiny_data, tmp_path):
    """End to end: --objective iwae --train_samples 1 gives the default ELBO run's history and test figures."""
    records = []
    for name, flags in (("default", []), ("iwae-k1", ["--objective", "iwae", "--train_samples", "1"])):
        train_torch.main(train_torch.parse_args(["--data_dir", str(tiny_data), "--log_dir", str(tmp_path / name),
                                                 *FAMILY_SMALL, "--final_iw_samples", "0", *flags]))
        run_dir = only_run_dir(tmp_path / name)
        history = history_without_time(run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        records.append((history, metrics["test_bpd"], metrics["test_kl_nats"]))
    assert len(records[0][0]) == 2 and records[0] == records[1]


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_writes_every_output(family_runs, name):
    run_dir = family_runs[name]
    files = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert {"args.json", "history.jsonl", "metrics.json", "eval_test.json", "vae_manifold.png",
            "samples_epoch_000.png", "samples_epoch_002.png", "checkpoints/best.pt", "checkpoints/last.pt"} <= files
    args = json.loads((run_dir / "args.json").read_text())
    flags = dict(zip(FAMILIES[name][::2], FAMILIES[name][1::2]))
    assert args["objective"] == flags.get("--objective", "elbo")
    assert args["train_samples"] == int(flags.get("--train_samples", 1))
    assert (args["flow"], args["flow_length"]) == (flags.get("--flow", "none"), int(flags.get("--flow_length", 0)))
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["args"]["flow"] == args["flow"]
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    for h in history:  # the training objective and the ELBO terms, on the same scale
        assert h["train_bpd"] == pytest.approx((h["train_rec_nats"] + h["train_kl_nats"]) / 784 / math.log(2))
        if args["objective"] == "iwae":
            assert h["train_objective_bpd"] < h["train_bpd"] + 0.05  # the tighter bound, up to noise
        assert 0 < h["train_objective_bpd"] < 8
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = json.loads((run_dir / "eval_test.json").read_text())
    assert metrics["test_iw_bpd"] == record["iw_bpd"] and len(record["per_image_iw_bpd"]) == 60
    # The machine that ran it, as this process sees it (one_thread: the fixture's single torch thread).
    assert metrics["machine"] == {"device_name": hardware.machine(torch.device("cpu"))["device_name"],
                                  "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                  else os.cpu_count(), "threads": 1, "torch": torch.__version__,
                                  "cuda": torch.version.cuda}


def test_evaluate_rebuilds_the_flow_from_the_checkpoint(family_runs):
    model, ckpt = load_model(family_runs["iwae-planar"] / "checkpoints" / "best.pt", torch.device("cpu"))
    assert (model.flow, model.flow_length) == ("planar", 2) and hasattr(model, "flow_head")


@pytest.mark.slow
def test_kill_then_resume_of_iwae_planar_equals_uninterrupted(tiny_data, tmp_path):
    flags = ["--data_dir", str(tiny_data), *FAMILY_SMALL, "--epochs", "3", "--batch_size", "16",
             *FAMILIES["iwae-planar"]]
    # Both runs in fresh processes with the same environment (thread count included): bitwise comparable.
    assert run_script(["part1/train_torch.py", *flags, "--log_dir", tmp_path / "ref"]).returncode == 0
    reference = json.loads((only_run_dir(tmp_path / "ref") / "metrics.json").read_text())
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    process = subprocess.Popen([sys.executable, str(PART1 / "train_torch.py"), *flags, "--log_dir",
                                str(tmp_path / "cut")], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_for(process, tmp_path / "cut", "*/checkpoints/last.pt")
    process.kill()
    process.wait()
    run_dir = only_run_dir(tmp_path / "cut")
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] < 3  # really cut short
    result = run_script(["part1/train_torch.py", "--resume", run_dir, "--no-progress_bar"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert history_without_time(run_dir) == history_without_time(only_run_dir(tmp_path / "ref"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_bpd"] == reference["test_bpd"] and metrics["test_iw_bpd"] == reference["test_iw_bpd"]
