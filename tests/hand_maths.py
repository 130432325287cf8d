"""Hand-written densities and a helper model for the guard tests of the VAE's maths (tests/vae/test_model.py,
test_bounds.py, test_training.py; tests/engine/test_epoch.py): every density is written out here, not via utils'
helpers, so a mutated formula in part1 cannot agree with itself."""
import math

import torch

from conftest import quantized_images
from dgmkit.vae import flows
from dgmkit.vae.model import VAE

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
BITS = 784 * math.log(2)  # nats per image -> bits per dimension: divide by this


def images(num, seed):
    return quantized_images(num, seed)[0]  # [num, 1, 28, 28] levels 0..15


def log_cat(logits, imgs):
    """log p(x|z) by hand: each pixel's level's log-softmax, summed over the 784 pixels: [N] float64."""
    return torch.log_softmax(logits.double(), dim=1).gather(1, imgs).sum(dim=(1, 2, 3))


def log_n01(z):
    """log N(z; 0, I) summed over the last dimension."""
    return (-0.5 * z.double() ** 2 - HALF_LOG_2PI).sum(-1)


def log_q0(eps, log_std):
    """log N(mean + std * eps; mean, std^2) = sum of -eps^2/2 - log std - log(2 pi)/2."""
    return (-0.5 * eps.double() ** 2 - log_std.double() - HALF_LOG_2PI).sum(-1)


def kl_closed(mean, log_std):
    mean, log_std = mean.double(), log_std.double()
    return 0.5 * (torch.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std).sum(-1)


def make_model(flow, length, seed=0, z_dim=3):
    torch.manual_seed(seed)
    model = VAE(4, z_dim, 1e-3, flow, length)
    if length:  # a flow that does something: larger raw parameters than the random init gives
        with torch.no_grad():
            model.flow_head.weight.mul_(20.0)
            model.flow_head.bias.uniform_(-1.5, 1.5)
    return model


def hand_weights(model, imgs, chunks):
    """log p(x|z_k), log p(z_k), log q(z_k|x) [B, K] float64, replaying log_weights' draws: one
    randn(B, k, D) per chunk of k samples, z0 = mean + std * eps, then the flow layer by layer."""
    mean, log_std, params = model.encode(imgs)
    B, D = mean.shape
    out = {"log_px": [], "log_pz": [], "log_q": []}
    for k in chunks:
        eps = torch.randn(B, k, D)
        z = mean.unsqueeze(1) + log_std.exp().unsqueeze(1) * eps  # [B, k, D]
        log_det = torch.zeros(B, k)
        if params is not None:
            z, log_det = flows.flow(model.flow, z, params.unsqueeze(1), model.flow_length)
        logits = model.decoder(z.reshape(B * k, D))
        out["log_px"].append(log_cat(logits, imgs.repeat_interleave(k, dim=0)).view(B, k))
        out["log_pz"].append(log_n01(z))
        out["log_q"].append(log_q0(eps, log_std.unsqueeze(1)) - log_det.double())
    return {key: torch.cat(parts, dim=1) for key, parts in out.items()}, (mean, log_std)


def hand_single_sample(model, imgs):
    """The single-sample ELBO's parts by hand, drawing eps = randn [B, D] from the current RNG as VAE.forward and
    elbo_per_image do: dict of z, rec = -log p(x|z), kl (closed form without a flow, log q0(z0) - sum log|det|
    - log p(z_L) with one; Rezende & Mohamed eq. 13), log_det, mean, log_std; [B] float64 where per image."""
    mean, log_std, params = model.encode(imgs)
    eps = torch.randn(mean.shape)
    z = mean + log_std.exp() * eps
    log_det = torch.zeros(len(imgs))
    if params is None:
        kl = kl_closed(mean, log_std)
    else:
        z, log_det = flows.flow(model.flow, z, params, model.flow_length)
        kl = log_q0(eps, log_std) - log_det.double() - log_n01(z)
    return {"z": z, "rec": -log_cat(model.decoder(z), imgs), "kl": kl, "log_det": log_det, "mean": mean,
            "log_std": log_std}
