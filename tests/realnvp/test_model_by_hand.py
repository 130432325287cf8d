"""dgmkit/realnvp/model.py checked piece by piece against hand-written expectations (each test names the cosmic-ray
mutants it kills: tests/mutation/README.md).
Expected values are written out here (eq. 9 of Dinh et al. with the masks drawn by hand, the standard normal CDF
through the inverse logit pre-processing), never taken from the function under test."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from dgmkit.realnvp.model import (ALPHA, ChannelCoupling, CheckerboardCoupling, RealNVP, STNet, checkerboard,
                                  dequantized_nll)

DT = torch.float64


def randomise(module, std=0.3, seed=1):
    """Every conv weight/bias N(0, std^2), every per-channel scale U(0.5, 1.5): no coupling is the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(0.5 + torch.rand(p.shape, generator=gen, dtype=DT) if name.endswith("scale") else
                    std * torch.randn(p.shape, generator=gen, dtype=DT))
    return module


def hand_mask(h, w, parity):
    """The checkerboard mask by hand: 1 where (i + j) is even (parity 0) or odd (parity 1); [1, 1, h, w] float64."""
    return torch.tensor([[1.0 if (i + j) % 2 == parity else 0.0 for j in range(w)] for i in range(h)],
                        dtype=DT).view(1, 1, h, w)


def test_checkerboard_is_the_hand_drawn_mask_in_the_asked_dtype():
    """Kills `(i + j) % 2 > parity` (parity 1 gives an empty mask) and `dtype and torch.float32` (a float64 request
    gives float32; no dtype gives a bool tensor)."""
    for h, w in ((2, 2), (3, 5), (4, 6)):
        for parity in (0, 1):
            mask = checkerboard(h, w, parity)
            assert mask.dtype == torch.float32 and mask.shape == (1, 1, h, w)
            assert torch.equal(mask.double(), hand_mask(h, w, parity))
            assert checkerboard(h, w, parity, dtype=DT).dtype == DT
    assert checkerboard(1, 2, 0).tolist() == [[[[1.0, 0.0]]]] and checkerboard(1, 2, 1).tolist() == [[[[0.0, 1.0]]]]


@pytest.mark.parametrize("parity", [0, 1])
def test_checkerboard_coupling_is_eq_9_on_non_square_images(parity):
    """y = b x + (1 - b)(x exp(s) + t) with s, t = the coupling's net on (b x, b), masked to the transformed pixels;
    log|det| = sum (1 - b) s; the inverse recovers x. On 4x6 images (H != W).
    Kills `t * (1 * b)` in _st (the translation dropped from every transformed pixel), and `x.shape[3]` /
    `x.shape[2]` / `y.shape[2]` for the mask's height or width in forward and inverse (a 6x6 or 4x4 mask)."""
    layer = randomise(CheckerboardCoupling(2, parity, 8, 1).double())
    x = torch.randn(3, 2, 4, 6, generator=torch.Generator().manual_seed(0), dtype=DT)
    b = hand_mask(4, 6, parity)
    with torch.no_grad():
        raw_s, raw_t = layer.net(torch.cat([x * b, b.expand(3, 1, 4, 6)], dim=1))  # the s/t net: any function
        s, t = raw_s * (1 - b), raw_t * (1 - b)
        expected = b * x + (1 - b) * (x * torch.exp(s) + t)
        y, log_det = layer(x)
        assert (t.abs() * (1 - b)).max().item() > 1e-2  # the translation really acts on the transformed pixels
        assert (y - expected).abs().max().item() < 1e-12
        assert (log_det - s.flatten(1).sum(1)).abs().max().item() < 1e-12
        assert torch.equal(y * b, x * b)  # the kept pixels pass unchanged
        assert (layer.inverse(y) - x).abs().max().item() < 1e-12


def kept_part(layer, x):
    """Which part of x [B, C, H, W] a randomised coupling leaves exactly unchanged: "even" or "odd" checkerboard
    pixels, the "first" or "second" channel half, or "neither"."""
    with torch.no_grad():
        same = layer(x)[0] == x
    if isinstance(layer, ChannelCoupling):
        half = x.shape[1] // 2
        parts = {(True, False): "first", (False, True): "second"}
        return parts.get((bool(same[:, :half].all()), bool(same[:, half:].all())), "neither")
    even = hand_mask(x.shape[2], x.shape[3], 0).bool().expand_as(x)
    parts = {(True, False): "even", (False, True): "odd"}
    return parts.get((bool(same[even].all()), bool(same[~even].all())), "neither")


@pytest.mark.parametrize("couplings,final_couplings", [(3, 4), (4, 5)])
def test_the_masks_alternate_as_the_checkpoints_were_trained(couplings, final_couplings):
    """The layout the saved runs were trained with (a checkpoint loaded into another layout gives another density),
    on 1x8x8 images with two scales: per scale, checkerboard couplings keeping the even, odd, even, ... pixels, then
    (after the squeeze) channel couplings keeping the first, second, first, ... channel half; the final checkerboard
    couplings keep even, odd, even, ...; with the default 3 (and 4 final) couplings and with 4 (and 5). Checked by
    which entries each randomised layer leaves exactly unchanged.
    Kills, for the checkerboard parities (scales and final), `k * 2`, `k + 2`, `k - 2`, `k / 2`, `k ** 2`, `k % 1`,
    `k % 3` (masks that repeat or are empty: every pixel transformed), `(i + j) % 2 > parity` and `!= parity` in
    checkerboard, and for the channel flips `k % 2 < 1`, `<= 1`, `!= 1`, `> 1`, `== 0`, `== 2`, `k * 2 == 1`,
    `k % 1 == 1`, `k + 2 == 1`, `k - 2 == 1`, `k / 2 == 1` and (with 4 couplings) `k % 3 == 1`, `k ** 2 == 1`."""
    model = randomise(RealNVP(levels=16, hidden_channels=4, num_blocks=1, image_shape=(1, 8, 8), couplings=couplings,
                              final_couplings=final_couplings).double(), std=0.2)
    gen = torch.Generator().manual_seed(3)
    shapes = [((1, 8, 8), (4, 4, 4)), ((2, 4, 4), (8, 2, 2))]  # (checkerboard input, channel input) per scale
    for layers, (checker_shape, channel_shape) in zip(model.scales, shapes):
        layout = [kept_part(layer, torch.randn(2, *(channel_shape if isinstance(layer, ChannelCoupling) else
                                                   checker_shape), generator=gen, dtype=DT))
                  for layer in layers if isinstance(layer, (CheckerboardCoupling, ChannelCoupling))]
        assert layout == [("even", "odd")[k % 2] for k in range(couplings)] + \
            [("first", "second")[k % 2] for k in range(couplings)]
    final = [kept_part(layer, torch.randn(2, 4, 2, 2, generator=gen, dtype=DT)) for layer in model.final]
    assert final == [("even", "odd")[k % 2] for k in range(final_couplings)]


@pytest.mark.parametrize("shape", [(1, 4, 6), (1, 6, 4), (1, 4, 2)])
def test_an_image_that_cannot_be_squeezed_at_some_scale_is_refused(shape):
    """Two scales need H and W divisible by 4: 4x6 (W odd at scale 2), 6x4 (H odd at scale 2) and 4x2 are refused
    at construction. Kills `h % 2 and w % 2` (refusing only when both are odd)."""
    with pytest.raises(ValueError, match="cannot squeeze"):
        RealNVP(hidden_channels=4, num_blocks=1, image_shape=shape, num_scales=2)
    RealNVP(hidden_channels=4, num_blocks=1, image_shape=(1, 4, 8), num_scales=2)  # both divisible by 4: fine


def normal_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_default_samples_have_the_level_frequencies_of_a_unit_normal_through_the_inverse_logit():
    """At initialisation the flow is the identity (a permutation of the latents), so each pixel of sample(n) is
    z ~ N(0, 1) (temperature 1 by default) mapped to y = (sigmoid(z) - alpha) / (1 - 2 alpha) and to
    level clamp(floor(y L), 0, L - 1): level k has probability Phi(logit(s_{k+1})) - Phi(logit(s_k)) with
    s_k = alpha + (1 - 2 alpha) k / L, the first and last levels taking the tails. Counts over 8 x 784 pixels
    within 5 standard deviations. Kills `temperature=0.0` as the default (every pixel at level L/2) and
    `clamp(1, L - 1)` / `clamp(0, L - 2)` (level 0 or L-1 never drawn: about 104 pixels expected in each)."""
    L, n = 16, 8
    model = RealNVP(levels=L, hidden_channels=4, num_blocks=1)
    torch.manual_seed(0)
    levels = model.sample(n)
    assert levels.shape == (n, 1, 28, 28) and levels.dtype == torch.long
    counts = torch.bincount(levels.flatten(), minlength=L).tolist()
    assert len(counts) == L  # nothing outside 0..L-1

    def cdf_at_level_edge(k):  # P(level < k) = P(sigmoid(z) < s_k); the edges 0 and L are the tails
        if k <= 0:
            return 0.0
        if k >= L:
            return 1.0
        s = ALPHA + (1 - 2 * ALPHA) * k / L
        return normal_cdf(math.log(s / (1 - s)))

    total = n * 784
    for k in range(L):
        p = cdf_at_level_edge(k + 1) - cdf_at_level_edge(k)
        assert abs(counts[k] - total * p) <= 5 * math.sqrt(total * p * (1 - p)) + 1, (k, counts[k], total * p)


def test_st_net_is_the_documented_residual_conv_net():
    """s, t = scale * tanh(raw_s), t with (raw_s, t) = out(relu(h)) split in two, h the 3x3 input conv followed by
    `num_blocks` residual blocks h <- h + conv(relu(conv(relu(h)))), written here with F.conv2d on the net's weights.
    Kills `h - block(h)` (the residual sign) and `for block in []` (the residual blocks skipped)."""
    net = randomise(STNet(3, 2, 5, 2).double(), std=0.2)
    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(4), dtype=DT)

    def conv(h, layer):
        return F.conv2d(h, layer.weight, layer.bias, padding=1)

    with torch.no_grad():
        h = conv(x, net.inp)
        for block in net.blocks:
            first, second = [m for m in block if isinstance(m, torch.nn.Conv2d)]
            h = h + conv(torch.relu(conv(torch.relu(h), first)), second)
        out = conv(torch.relu(h), net.out)
        expected_s, expected_t = net.scale * torch.tanh(out[:, :2]), out[:, 2:]
        s, t = net(x)
    assert (s - expected_s).abs().max().item() < 1e-12 and (t - expected_t).abs().max().item() < 1e-12
    assert t.abs().max().item() > 1e-2 and s.abs().max().item() > 1e-2


def test_multi_channel_images_log_det_matches_autograd_jacobian():
    """RealNVP on 2x4x4 images (C = 2, batch 3): log p(y) and its log-det [B] against the autograd Jacobian, as
    test_model_log_density_matches_autograd_jacobian does for one channel. Kills `w.new_zeros(w.shape[1])` in f
    (a log-det accumulator of C entries, which broadcasts only when C is 1 or B)."""
    model = randomise(RealNVP(levels=4, hidden_channels=4, num_blocks=1, image_shape=(2, 4, 4), num_scales=1,
                              couplings=2, final_couplings=2).double(), std=0.1)
    y = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=DT)

    def to_z(v):  # one image's y [32] -> its latents [32]
        zs, _ = model.f(model.preprocess(v.view(1, 2, 4, 4))[0])
        return torch.cat([z.flatten() for z in zs])

    with torch.no_grad():
        log_p, log_det = model.log_prob_continuous(y, return_log_det=True)
    assert log_p.shape == (3,) and log_det.shape == (3,)
    for b in range(3):
        logabsdet = torch.linalg.slogdet(jacobian(to_z, y[b].flatten()))[1].item()
        z = to_z(y[b].flatten())
        assert abs(log_det[b].item() - logabsdet) < 1e-8
        assert abs(log_p[b].item() - ((-0.5 * z ** 2).sum().item() - 16 * math.log(2 * math.pi) + logabsdet)) < 1e-8


def test_the_default_is_8_bit_data():
    """RealNVP() models 8-bit images (L = 256, the 2019 assignment's MNIST): nll_nats + log p(y) = 784 log 256 for
    the same dequantization noise. Kills `levels=257` and `levels=255` as the default."""
    model = RealNVP(hidden_channels=4, num_blocks=1)
    assert model.levels == 256
    imgs = torch.randint(0, 256, (2, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    with torch.no_grad():
        nll = model(imgs)["nll_nats"].item()
    torch.manual_seed(2)
    y = (imgs.float() + torch.rand(imgs.shape)) / 256
    with torch.no_grad():
        log_p = model.log_prob_continuous(y).double().mean().item()
    assert abs(nll + log_p - 784 * math.log(256)) < 1e-6 * abs(log_p) + 1e-3


def test_dequantized_nll_builds_no_graph():
    """The test phase keeps every batch's bounds: they must hold no autograd graph (the parameters require grad).
    Kills the removal of @torch.no_grad() on dequantized_nll."""
    model = RealNVP(levels=16, hidden_channels=4, num_blocks=1)
    assert all(p.requires_grad for p in model.parameters())
    nll = dequantized_nll(model, torch.randint(0, 16, (2, 1, 28, 28)), draws=2)
    assert nll.dtype == DT and nll.shape == (2,)
    assert not nll.requires_grad and nll.grad_fn is None
