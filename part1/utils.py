"""Maths of the VAE: reparameterized sampling, closed-form KL, bits per dimension, manifold.

Units: every loss here is in nats per image unless a name says bits; `elbo_to_bpd` converts.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from scipy.stats import norm

LOG_2PI = math.log(2 * math.pi)


def sample_reparameterize(mean, std):
    """Draw z ~ N(mean, std^2) with the reparameterization trick: z = mean + std * eps.

    eps ~ N(0, I) is drawn independently per element, so gradients flow to both `mean`
    and `std` (dz/dmean = 1, dz/dstd = eps).

    Args:
        mean: [B, z_dim] means of q(z|x).
        std: [B, z_dim] standard deviations (not log std); must be non-negative.
    Returns:
        z: [B, z_dim] one sample per element.
    """
    # Checked on the CPU in eager mode only: on a GPU the check would force a host sync every step,
    # and under torch.compile a graph break (the VAE passes exp(log_std) there, never negative).
    if std.device.type == "cpu" and not torch.compiler.is_compiling() and bool((std < 0).any()):
        raise ValueError("sample_reparameterize: std has negative entries; pass a standard "
                         "deviation such as exp(log_std), not log_std itself")
    eps = torch.randn_like(std)
    return mean + std * eps


def KLD(mean, log_std):
    """KL(N(mean, exp(log_std)^2) || N(0, I)), closed form, summed over the last dimension.

    Per dimension: 0.5 * (sigma^2 + mu^2 - 1 - log sigma^2) with log sigma^2 = 2 * log_std
    (Kingma & Welling 2014, appendix B).

    Args:
        mean: [..., z_dim]; log_std: [..., z_dim].
    Returns:
        KL in nats, shape [...] (e.g. [B] for a batch).
    """
    return 0.5 * (torch.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std).sum(dim=-1)


def elbo_to_bpd(elbo, img_shape):
    """Convert a negative ELBO in nats per image to bits per dimension.

    bpd = elbo * log2(e) / prod(img_shape[1:]), i.e. nats -> bits, then divided by the
    number of dimensions of one image (1 * 28 * 28 = 784 for FashionMNIST).

    Args:
        elbo: tensor (any shape) of negative ELBOs, nats per image.
        img_shape: shape of the image batch, [B, C, H, W]; the batch size is not used.
    Returns:
        bits per dimension, same shape as `elbo`.
    """
    return elbo * math.log2(math.e) / math.prod(img_shape[1:])


def log_standard_normal(z):
    """log N(z; 0, I) in nats, summed over the last dimension: [..., D] -> [...]."""
    return (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(dim=-1)


def log_normal_from_eps(eps, log_std):
    """log N(z; mean, diag(exp(log_std)^2)) in nats for z = mean + exp(log_std) * eps, summed over the last dim.

    Written with eps = (z - mean) / std, which is exact even when std is tiny (z - mean would round).
    Args:
        eps: [..., D] standard normal noise; log_std: [..., D] (broadcastable).
    Returns:
        [...] log-densities in nats.
    """
    return (-0.5 * eps ** 2 - log_std - 0.5 * LOG_2PI).sum(dim=-1)


def log_px_given_z(logits, imgs):
    """log p(x|z) in nats per image: minus the cross-entropy of the per-pixel categoricals, summed over pixels.

    Args:
        logits: [N, L, 28, 28] decoder logits; imgs: [N, 1, 28, 28] long levels 0..L-1.
    Returns:
        [N] float64 log-likelihoods (per-pixel terms in the logits' precision, summed in float64).
    """
    ce = F.cross_entropy(logits, imgs.squeeze(1), reduction="none")  # [N, 28, 28]
    return -ce.double().flatten(1).sum(dim=1)  # [N]


def manifold_latents(grid_size):
    """The z grid of `visualize_manifold`: [grid_size**2, 2], row-major over the image grid.

    Per axis the values are Phi^-1((i + 0.5) / grid_size), i = 0..grid_size-1, the midpoints
    of grid_size equal-probability bins of N(0, 1). Entry k = row * grid_size + col has
    z1 = Phi^-1 at `col` (left to right) and z2 = Phi^-1 at `row` (top to bottom).
    """
    values = torch.as_tensor(norm.ppf((np.arange(grid_size) + 0.5) / grid_size), dtype=torch.float32)
    z1, z2 = torch.meshgrid(values, values, indexing="xy")  # each [grid_size, grid_size]
    return torch.stack([z1.flatten(), z2.flatten()], dim=1)  # [grid_size**2, 2]


def decoder_mean_image(logits):
    """The decoder mean as an image: each pixel is E[level] / (L - 1) = sum_k k * p_k / (L - 1), in [0, 1].

    Args:
        logits: [N, L, H, W] logits of the per-pixel L-way categoricals (L = 16 levels).
    Returns:
        [N, 1, H, W] float32 images in [0, 1] (level 0 -> 0, level L-1 -> 1), on the logits' device.
    """
    probs = torch.softmax(logits.float(), dim=1)  # [N, L, H, W]
    levels = torch.arange(probs.shape[1], device=probs.device, dtype=probs.dtype)  # [L]
    return (probs * levels.view(1, -1, 1, 1)).sum(dim=1, keepdim=True) / (probs.shape[1] - 1)  # [N, 1, H, W]


@torch.no_grad()
def visualize_manifold(decoder, grid_size=20):
    """Decode a grid of 2-D latents into one image of the learned data manifold.

    Columns vary z1 (left to right, increasing) and rows vary z2 (top to bottom, increasing);
    both run over Phi^-1((i + 0.5) / grid_size), Phi^-1 the standard normal ppf.
    Each pixel shows the expected value of its L-way categorical, sum_k k * p_k / (L - 1),
    i.e. the decoder mean rather than a sample.

    Args:
        decoder: maps z [N, 2] to logits [N, L, 28, 28]; needs a `device` property.
        grid_size: images per row and per column.
    Returns:
        img_grid: [3, H, W] float tensor in [0, 1] from torchvision.utils.make_grid (on CPU).
    """
    was_training = decoder.training
    decoder.eval()
    z = manifold_latents(grid_size).to(decoder.device)  # [G*G, 2]
    mean_img = decoder_mean_image(decoder(z))  # [G*G, 1, 28, 28] in [0, 1]
    decoder.train(was_training)
    return torchvision.utils.make_grid(mean_img.cpu(), nrow=grid_size).clamp(0, 1)
