"""Tests of part1/gan.py (the 2019 assignment's GAN): the losses against values computed by hand with math.log, the
pixel maps, the architecture's sizes counted by hand, each player's step touching only its own parameters (and the
exact Adam update of the loss written here), sampling, interpolation and a short epoch. Expected values come from
Python floats, closed forms or autograd on a copy, never from the function under test."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from dgmkit.gan.model import (GAN, Generator, build, discriminator_loss, discriminator_step, generator_loss,
                              generator_step, to_levels, to_unit, train_epoch)

LR = 2e-4


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(before, module):
    """Every parameter of `module` bitwise equal to the clones in `before`."""
    return all(torch.equal(b, p) for b, p in zip(before, module.parameters()))


def all_changed(before, module):
    return all(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def random_levels(n, L=256, seed=0):
    return torch.randint(0, L, (n, 1, 28, 28), generator=torch.Generator().manual_seed(seed))   # [n, 1, 28, 28]


def test_losses_match_hand_values():
    zero = torch.zeros(5)
    # D = 1/2 everywhere: -log(1/2) - log(1 - 1/2) = 2 log 2, and -log(1/2) = log 2.
    assert abs(discriminator_loss(zero, zero[:3]).item() - 2 * math.log(2)) < 1e-6
    assert abs(generator_loss(zero).item() - math.log(2)) < 1e-6
    real, fake = [1.0, -2.0, 0.3], [0.5, 3.0]
    d_expected = (-sum(math.log(sigmoid(r)) for r in real) / len(real)
                  - sum(math.log(1 - sigmoid(f)) for f in fake) / len(fake))
    g_expected = -sum(math.log(sigmoid(f)) for f in fake) / len(fake)
    assert abs(discriminator_loss(torch.tensor(real), torch.tensor(fake)).item() - d_expected) < 1e-6
    assert abs(generator_loss(torch.tensor(fake)).item() - g_expected) < 1e-6
    # Saturated logits stay finite: -log sigmoid(-200) = 200 + log(1 + e^-200) ~ 200 (log of a float sigmoid: inf).
    assert abs(discriminator_loss(torch.tensor([-200.0]), torch.tensor([-50.0])).item() - 200.0) < 1e-3
    assert abs(generator_loss(torch.tensor([-300.0])).item() - 300.0) < 1e-3


@pytest.mark.parametrize("L", [2, 16, 256])
def test_pixel_maps_round_trip_every_level(L):
    levels = torch.arange(L).view(1, 1, 1, L)                                # [1, 1, 1, L]
    unit = to_unit(levels, L)
    expected = torch.tensor([v / (L - 1) * 2 - 1 for v in range(L)]).view(1, 1, 1, L)
    assert unit.dtype == torch.float32 and (unit - expected).abs().max().item() < 1e-6
    assert unit.min().item() == -1.0 and unit.max().item() == 1.0
    back = to_levels(unit, L)
    assert back.dtype == torch.long and torch.equal(back, levels)
    half_step = 1 / (L - 1)                                                  # a level is 2 / (L - 1) wide
    assert torch.equal(to_levels(unit + 0.8 * half_step, L), levels)        # rounds to the nearest level
    assert torch.equal(to_levels(unit - 0.8 * half_step, L), levels)
    assert to_levels(torch.tensor([-7.0, 7.0]), L).tolist() == [0, L - 1]  # clamped into range


def test_architecture_sizes_counted_by_hand():
    gan = GAN(latent_dim=100, levels=256)
    g_linear = [(100, 128), (128, 256), (256, 512), (512, 1024), (1024, 784)]
    g_expected = sum(i * o + o for i, o in g_linear) + sum(2 * n for n in (256, 512, 1024))   # + BN weight, bias
    assert g_expected == 1_510_032
    d_expected = (784 * 512 + 512) + (512 * 256 + 256) + (256 * 1 + 1)
    assert sum(p.numel() for p in gan.generator.parameters()) == g_expected
    assert sum(p.numel() for p in gan.discriminator.parameters()) == d_expected
    assert sum(p.numel() for p in gan.parameters()) == g_expected + d_expected
    leaves = [m for m in gan.generator.modules() if not list(m.children())]
    kinds = [type(m).__name__ for m in leaves]
    assert kinds == ["Linear", "LeakyReLU"] + ["Linear", "BatchNorm1d", "LeakyReLU"] * 3 + ["Linear", "Tanh"]
    assert [(m.in_features, m.out_features) for m in leaves if isinstance(m, nn.Linear)] == g_linear
    assert [m.num_features for m in leaves if isinstance(m, nn.BatchNorm1d)] == [256, 512, 1024]
    d_leaves = [m for m in gan.discriminator.modules() if not list(m.children())]
    assert [type(m).__name__ for m in d_leaves] == ["Linear", "LeakyReLU"] * 2 + ["Linear"]
    assert all(m.negative_slope == 0.2 for m in leaves + d_leaves if isinstance(m, nn.LeakyReLU))
    assert set(k.split(".")[0] for k in gan.state_dict()) == {"generator", "discriminator"}


def test_generator_range_and_discriminator_logits():
    torch.manual_seed(0)
    gan = GAN()
    out = gan.generator(50 * torch.randn(6, 100))                            # large z: saturated tanh
    assert out.shape == (6, 1, 28, 28) and out.min().item() >= -1 and out.max().item() <= 1
    last = [m for m in gan.discriminator.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(5.0)
    logits = gan.discriminator(out)
    assert logits.shape == (6,) and torch.equal(logits, torch.full((6,), 5.0))   # a logit, not sigmoid(5)


def grad_hooks(module):
    """Count the gradients autograd computes for module's parameters (a hook fires once per gradient)."""
    fired = []
    handles = [p.register_hook(lambda g: fired.append(1)) for p in module.parameters()]
    return fired, handles


def assert_adam_first_step(module, before, grads):
    """Adam's first update from zero moments: m_hat = g, v_hat = g^2, so p = p0 - lr * g / (|g| + eps), eps = 1e-8.
    Checked tightly where |g| > 1e-6; where |g| is near eps (e.g. the biases before batch norm, whose gradient is
    zero up to rounding) the step is noise, and only its bound |p - p0| <= lr is checked."""
    for p, b, g in zip(module.parameters(), before, grads):
        step = p.detach() - b
        expected = -LR * g / (g.abs() + 1e-8)
        big = g.abs() > 1e-6
        assert big.any() or b.dim() == 1
        assert not (big & ((step - expected).abs() >= 1e-3 * LR)).any()
        assert step.abs().max().item() <= 1.001 * LR


def test_discriminator_step_updates_only_the_discriminator():
    torch.manual_seed(1)
    gan, opt_g, opt_d = build(lr=LR)
    real = random_levels(8)
    copy_gan = copy.deepcopy(gan)
    g_before, d_before = params(gan.generator), params(gan.discriminator)
    fired, handles = grad_hooks(gan.generator)
    torch.manual_seed(7)
    stats = discriminator_step(gan, real, opt_d)
    for h in handles:
        h.remove()
    assert not fired                                                         # no gradient into G at all
    assert same(g_before, gan.generator) and all_changed(d_before, gan.discriminator)
    assert all(p.grad is None for p in gan.parameters())                     # nothing left for either optimizer
    # Independently: the same z (same seed, same draw), the loss written from sigmoids, autograd on the copy.
    torch.manual_seed(7)
    z = torch.randn(8, 100)
    with torch.no_grad():
        fake = copy_gan.generator(z)
    r = copy_gan.discriminator(real.float() / 255 * 2 - 1)
    f = copy_gan.discriminator(fake)
    loss = -torch.log(torch.sigmoid(r)).mean() - torch.log(1 - torch.sigmoid(f)).mean()
    grads = torch.autograd.grad(loss, list(copy_gan.discriminator.parameters()))
    assert abs(stats["d_loss"] - loss.item()) < 1e-5
    assert abs(stats["d_real"] - torch.sigmoid(r).mean().item()) < 1e-6
    assert abs(stats["d_fake"] - torch.sigmoid(f).mean().item()) < 1e-6
    assert_adam_first_step(gan.discriminator, d_before, grads)
    assert all(type(v) is float for v in stats.values())


def test_generator_step_updates_only_the_generator():
    torch.manual_seed(2)
    gan, opt_g, opt_d = build(lr=LR)
    copy_gan = copy.deepcopy(gan)
    g_before, d_before = params(gan.generator), params(gan.discriminator)
    fired, handles = grad_hooks(gan.discriminator)
    torch.manual_seed(9)
    stats = generator_step(gan, 6, opt_g)
    for h in handles:
        h.remove()
    assert not fired                                                         # D frozen in the backward pass
    assert same(d_before, gan.discriminator) and all_changed(g_before, gan.generator)
    assert all(p.grad is None for p in gan.parameters())
    assert all(p.requires_grad for p in gan.parameters())                    # the freeze was undone
    torch.manual_seed(9)
    f = copy_gan.discriminator(copy_gan.generator(torch.randn(6, 100)))      # [6]
    loss = -torch.log(torch.sigmoid(f)).mean()                               # non-saturating: -log D(G(z))
    grads = torch.autograd.grad(loss, list(copy_gan.generator.parameters()))
    assert abs(stats["g_loss"] - loss.item()) < 1e-5
    assert abs(stats["d_fake"] - torch.sigmoid(f).mean().item()) < 1e-6
    assert_adam_first_step(gan.generator, g_before, grads)


def test_sample_shapes_rng_and_mode():
    gan = GAN(latent_dim=100, levels=16)
    for mode in (True, False):
        gan.train(mode)
        torch.manual_seed(3)
        imgs = gan.sample(1)                                                 # n = 1 works: batch norm in eval
        assert gan.training is mode and gan.generator.training is mode and gan.discriminator.training is mode
        assert imgs.shape == (1, 1, 28, 28) and imgs.dtype == torch.long
    torch.manual_seed(3)
    imgs = gan.sample(5)
    assert imgs.min().item() >= 0 and imgs.max().item() <= 15
    torch.manual_seed(3)
    z = torch.randn(5, 100)                                                  # the global RNG's draw
    with torch.no_grad():
        expected = ((gan.generator.eval()(z) + 1) / 2 * 15).round().long()
    assert torch.equal(imgs, expected)


def test_interpolation_ends_and_steps():
    torch.manual_seed(4)
    gan = GAN()
    gan.train()
    z0, z1 = torch.randn(100), torch.randn(100)
    imgs = gan.interpolate(z0, z1)                                           # the 2019 question: 9 images
    assert imgs.shape == (9, 1, 28, 28) and imgs.dtype == torch.long and gan.training
    assert imgs.min().item() >= 0 and imgs.max().item() <= 255
    gen = gan.generator.eval()
    with torch.no_grad():
        images = [((gen(z.view(1, -1)) + 1) / 2 * 255).round().long()[0] for z in (z0, z1)]
        middle = ((gen((z0 + (z1 - z0) * 3 / 8).view(1, -1)) + 1) / 2 * 255).round().long()[0]
    assert torch.equal(imgs[0], images[0]) and torch.equal(imgs[-1], images[1])
    assert (imgs[3] - middle).abs().max().item() <= 1                        # point 3 of 8 intervals (rounding)
    assert not torch.equal(imgs[0], imgs[-1])
    assert gan.interpolate(z0, z1, steps=0).shape == (2, 1, 28, 28)


def loader(sizes, seed):
    return [(random_levels(n, seed=seed + i), torch.zeros(n, dtype=torch.long)) for i, n in enumerate(sizes)]


def test_train_epoch_averages_and_updates_both():
    torch.manual_seed(5)
    gan, opt_g, opt_d = build()
    batches = loader([8, 5], seed=10)                                        # uneven: G's batch follows the real one
    twin = copy.deepcopy((gan, opt_g, opt_d))
    g_before, d_before = params(gan.generator), params(gan.discriminator)
    torch.manual_seed(6)
    avg = train_epoch(gan, batches, opt_g, opt_d)
    assert set(avg) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(math.isfinite(v) for v in avg.values()) and 0 < avg["d_real"] < 1 and 0 < avg["d_fake"] < 1
    assert all_changed(g_before, gan.generator) and all_changed(d_before, gan.discriminator)
    # The averages by hand: the same steps on the twin, D then G with the real batch's size, in that order.
    t_gan, t_g, t_d = twin
    torch.manual_seed(6)
    steps = []
    for imgs, _ in batches:
        d = discriminator_step(t_gan, imgs, t_d)
        steps.append((d["d_loss"], generator_step(t_gan, imgs.shape[0], t_g)["g_loss"], d["d_real"], d["d_fake"]))
    for k, key in enumerate(("d_loss", "g_loss", "d_real", "d_fake")):
        assert abs(avg[key] - sum(s[k] for s in steps) / len(steps)) < 1e-6
    assert same(params(t_gan), gan)
    # Bare tensors work too.
    assert math.isfinite(train_epoch(gan, [random_levels(4)], opt_g, opt_d)["g_loss"])


def test_train_epoch_raises_on_non_finite_loss():
    gan, opt_g, opt_d = build()
    with torch.no_grad():
        next(gan.discriminator.parameters())[0, 0] = float("nan")
    before = params(gan)
    with pytest.raises(FloatingPointError, match="not finite"):
        train_epoch(gan, loader([4], seed=0), opt_g, opt_d)
    assert all(torch.equal(b.nan_to_num(), p.detach().nan_to_num()) for b, p in zip(before, gan.parameters()))
    with pytest.raises(ValueError):
        train_epoch(GAN(), [], opt_g, opt_d)


def test_build_optimizers_and_state_dict():
    gan, opt_g, opt_d = build(latent_dim=8, levels=4, lr=1e-3, betas=(0.4, 0.9))
    assert gan.latent_dim == 8 and gan.levels == 4 and gan.device == torch.device("cpu")
    for opt, player in ((opt_g, gan.generator), (opt_d, gan.discriminator)):
        (group,) = opt.param_groups
        assert isinstance(opt, torch.optim.Adam) and group["lr"] == 1e-3 and group["betas"] == (0.4, 0.9)
        assert [id(p) for p in group["params"]] == [id(p) for p in player.parameters()]
    fresh = GAN(latent_dim=8, levels=4)
    fresh.load_state_dict(gan.state_dict())
    torch.manual_seed(0)
    a = gan.sample(3)
    torch.manual_seed(0)
    assert torch.equal(a, fresh.sample(3))


# ---- found by mutation testing (tests/mutation/README.md) ----

def test_interpolation_every_point_is_k_eighths_of_the_way():
    """interpolate(z0, z1) with 7 steps: image k (k = 0..8) is G(z0 + (z1 - z0) k / 8) in eval mode, the ends
    exactly and the inner points up to one level of rounding (the module writes (1 - t) z0 + t z1); each inner
    point differs from both ends by more than a level.
    Kills `z[+1]`, `z[1]`, `z[~1]`, `z[-2]` (an inner point replaced by G(z1)) and `z[1], z[-1] = z0[0], ...` (the
    second point replaced by G(z0)) in the assignment of the ends."""
    torch.manual_seed(4)
    gan = GAN()
    with torch.no_grad():  # a steeper output layer: neighbouring points differ by several levels (at init by ~1)
        [m for m in gan.generator.modules() if isinstance(m, nn.Linear)][-1].weight.mul_(20)
    z0, z1 = torch.randn(100), torch.randn(100)
    imgs = gan.interpolate(z0, z1)                                           # [9, 1, 28, 28]
    generator = gan.generator.eval()
    with torch.no_grad():
        expected = [((generator((z0 + (z1 - z0) * k / 8).view(1, -1)) + 1) / 2 * 255).round().long()[0]
                    for k in range(9)]
    assert torch.equal(imgs[0], expected[0]) and torch.equal(imgs[8], expected[8])
    for k in range(1, 8):
        assert (imgs[k] - expected[k]).abs().max().item() <= 1, k
        assert (imgs[k] - expected[0]).abs().max().item() > 1 and (imgs[k] - expected[8]).abs().max().item() > 1, k


def test_the_generator_defaults_to_the_templates_100_latent_dimensions():
    """Generator() on its own (the 2019 template's z of 100 dimensions). Kills `latent_dim=101` / `=99` as
    Generator's default."""
    generator = Generator()
    first = [m for m in generator.modules() if isinstance(m, nn.Linear)][0]
    assert generator.latent_dim == 100 and first.in_features == 100
    assert generator.eval()(torch.zeros(2, 100)).shape == (2, 1, 28, 28)


def test_build_defaults_are_the_dcgan_settings():
    """build() with no arguments: a 100-dimensional, 256-level GAN on the CPU and Adam(lr 2e-4, betas (0.5, 0.999))
    per player (the docstring's DCGAN settings). Kills `lr=1.0002` as build's default."""
    gan, optimizer_g, optimizer_d = build()
    assert gan.latent_dim == 100 and gan.levels == 256 and gan.device == torch.device("cpu")
    for optimizer in (optimizer_g, optimizer_d):
        (group,) = optimizer.param_groups
        assert isinstance(optimizer, torch.optim.Adam)
        assert group["lr"] == 2e-4 and group["betas"] == (0.5, 0.999)


def test_train_epoch_skips_a_batch_of_one_image():
    """Issue 25, cause 8: a last batch of one image (batch norm has no statistics for it: torch's ValueError) is
    skipped; the epoch is the one without it, step for step and draw for draw."""
    torch.manual_seed(5)
    gan, opt_g, opt_d = build()
    twin, batches = copy.deepcopy((gan, opt_g, opt_d)), loader([8, 1], seed=10)
    torch.manual_seed(6)
    avg, after = train_epoch(gan, batches, opt_g, opt_d), torch.get_rng_state()
    torch.manual_seed(6)
    assert train_epoch(twin[0], batches[:1], twin[1], twin[2]) == avg  # the same averages: one batch of 8
    assert torch.equal(after, torch.get_rng_state()) and same(params(twin[0]), gan)
    with pytest.raises(ValueError, match="no batch of two or more images"):
        train_epoch(gan, loader([1], seed=0), opt_g, opt_d)
