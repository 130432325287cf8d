"""Tests of dgmkit/vae/training.py: one step of train_vae for each objective replayed with autograd and torch.optim on a
deep copy (the loss written out in hand_maths.py), its statistics by hand, and test_vae's image-weighted ELBO in eval
mode. The loop itself (gradient clipping, the non-finite check): tests/engine/test_epoch.py."""
import copy
import math

import pytest
import torch

from dgmkit.errors import UserError
from dgmkit.vae.bounds import objective
from dgmkit.vae.model import VAE
from dgmkit.vae.training import check_fits
from dgmkit.vae.training import test_vae as evaluate_split
from dgmkit.vae.training import train_vae
from hand_maths import BITS, hand_weights, images, make_model

pytestmark = pytest.mark.usefixtures("one_thread")


def hand_iwae_bpd(model, imgs, k):
    """-(log (1/K) sum_k w_k) averaged over images, in bpd, with the noise log_weights draws (randn [B, K, D])."""
    hand, _ = hand_weights(model, imgs, (k,))
    log_w = hand["log_px"] + hand["log_pz"] - hand["log_q"]
    return -(torch.logsumexp(log_w, dim=1) - math.log(k)).mean() / BITS


def hand_elbo_bpd(model, imgs, k):
    hand, _ = hand_weights(model, imgs, (k,))
    return -(hand["log_px"] + hand["log_pz"] - hand["log_q"]).mean() / BITS


def stepped(model, loss_fn, imgs, seed, make_optimizer):
    """A deep copy of model after one optimizer step on the gradient of loss_fn(copy, imgs) (noise from seed)."""
    clone = copy.deepcopy(model)
    optimizer = make_optimizer(clone.parameters())
    torch.manual_seed(seed)
    loss_fn(clone, imgs).backward()
    optimizer.step()
    return clone


def max_difference(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("flow, length", [("none", 0), ("planar", 2)])
def test_train_vae_iwae_takes_the_adam_step_of_the_iwae_loss(flow, length):
    """One step of train_vae(objective iwae, K = 5) = Adam on the gradient of the hand-computed IWAE loss,
    and not the step of the ELBO (the terms train_vae logs beside it)."""
    model = make_model(flow, length)
    imgs = images(4, 7)
    adam = lambda params: torch.optim.Adam(params, lr=1e-3)  # noqa: E731
    iwae = stepped(model, lambda m, x: hand_iwae_bpd(m, x, 5), imgs, 11, adam)
    elbo = stepped(model, lambda m, x: hand_elbo_bpd(m, x, 5), imgs, 11, adam)
    trained = copy.deepcopy(model)
    torch.manual_seed(11)
    train_vae(trained, [(imgs, torch.zeros(4))], adam(trained.parameters()), objective_name="iwae", train_samples=5)
    for (name, p), q in zip(trained.named_parameters(), iwae.parameters()):
        # Adam's step is lr g / (|g| + 1e-8): float32 rounding in g moves it by far less than lr / 50 ...
        torch.testing.assert_close(p, q, rtol=0, atol=2e-5, msg=name)
    # ... while the ELBO's step differs by up to 2 lr where its gradient has the other sign (> 1% of entries).
    flips = sum(((p - q).abs() > 1e-4).sum().item() for p, q in zip(trained.parameters(), elbo.parameters()))
    assert flips > 0.01 * sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["elbo", "iwae"])
def test_train_vae_sgd_steps_and_statistics(name):
    """Two batches (3 and 1 images) with SGD: every step is -lr * the gradient of the objective in bpd (its
    scale included), and the returned statistics are the image-weighted averages of the batches' terms."""
    model = make_model("planar", 1)
    batches = [(images(3, 8), torch.zeros(3)), (images(1, 9), torch.zeros(1))]
    reference, hand_loss = copy.deepcopy(model), hand_iwae_bpd if name == "iwae" else hand_elbo_bpd
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    torch.manual_seed(12)
    expected = {"objective_bpd": 0.0, "bpd": 0.0, "rec_nats": 0.0, "kl_nats": 0.0}
    for imgs, _ in batches:
        state = torch.get_rng_state()
        with torch.no_grad():
            terms = objective(reference, imgs, name, 3)
        for key in expected:
            expected[key] += terms[key].item() * len(imgs) / 4
        torch.set_rng_state(state)
        optimizer.zero_grad()
        hand_loss(reference, imgs, 3).backward()
        optimizer.step()
    trained = copy.deepcopy(model)
    torch.manual_seed(12)
    stats = train_vae(trained, batches, torch.optim.SGD(trained.parameters(), lr=0.5), objective_name=name,
                      train_samples=3)
    assert set(stats) == set(expected)
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-5), key
    assert max_difference(trained, model) > 1e-3  # it trained ...
    for (key, p), q in zip(trained.named_parameters(), reference.parameters()):  # ... by those steps
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=key)


def test_test_vae_is_the_image_weighted_elbo_in_eval_mode():
    model = make_model("radial", 2)
    batches = [(images(3, 30), None), (images(1, 31), None)]
    model.train()
    seen = []
    hook = model.decoder.register_forward_hook(
        lambda module, inputs, output: seen.append((module.training, torch.is_inference_mode_enabled())))
    torch.manual_seed(14)
    stats = evaluate_split(model, batches)
    hook.remove()
    assert seen == [(False, True)] * 2  # eval mode, no autograd graph
    assert model.training  # mode restored
    torch.manual_seed(14)
    expected = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for imgs, _ in batches:
            L_rec, L_reg, bpd = model(imgs)
            expected += torch.tensor([bpd.item(), L_rec.item(), L_reg.item()], dtype=torch.float64) * len(imgs) / 4
    assert list(stats) == ["bpd", "rec_nats", "kl_nats"]
    assert list(stats.values()) == pytest.approx(expected.tolist(), rel=1e-6)


def test_check_fits_is_the_engines_check_naming_the_vaes_size_flags():
    """engine/memory.py's check, as RealNVP and the GAN run it (issue 25, cause 10): the count on the meta device,
    and a refusal that names every flag sizing the VAE, --flow_length included."""
    assert check_fits(32, 20, "planar", 4, torch.device("cpu")) == sum(
        p.numel() for p in VAE(32, 20, 0.0, "planar", 4, 16).parameters())
    with pytest.raises(UserError, match=r"^the model does not fit: .*; lower --z_dim, --num_filters or --flow_length$"):
        check_fits(32, 20, "planar", 10 ** 11, torch.device("cpu"))
