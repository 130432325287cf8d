"""The 2019 assignment's GAN (Goodfellow et al. 2014, "Generative Adversarial Nets", NeurIPS): an MLP generator
G(z) and an MLP discriminator D(x) for 28x28 images whose pixels are integer levels 0..L-1 (8-bit MNIST: L = 256).

Pixels: the loaders yield long levels [B, 1, 28, 28]; the networks see floats in [-1, 1] (to_unit), the generator's
tanh output is mapped back to levels by rounding (to_levels).
Logits: the discriminator returns logit(D(x)) and every loss is written from logits with logsigmoid, which stays
finite where log(sigmoid(.)) of a saturated probability would be -inf:
    log D(x) = logsigmoid(l),   log(1 - D(x)) = log(sigmoid(-l)) = logsigmoid(-l).
Training: one discriminator step, then one generator step per batch (Goodfellow et al. 2014, Algorithm 1 with k = 1),
the generator trained with the non-saturating loss -log D(G(z)) (section 3). Both players use Adam.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE_SHAPE = (1, 28, 28)
NUM_PIXELS = 28 * 28


def to_unit(levels, L):
    """Integer levels 0..L-1 (any int dtype, any shape) -> floats in [-1, 1]: level / (L - 1) * 2 - 1.

    Level 0 -> -1, level L-1 -> +1, evenly spaced in between (the generator's tanh range).
    """
    return levels.float() / (L - 1) * 2 - 1                                  # same shape, float32


def to_levels(x, L):
    """Floats in [-1, 1] (any shape) -> long levels 0..L-1: the inverse of to_unit, rounded to the nearest level.

    Values outside [-1, 1] are clamped first, so the result is always a valid level; to_levels(to_unit(v, L), L) == v.
    """
    scaled = (x.clamp(-1, 1) + 1) / 2 * (L - 1)                              # same shape, in [0, L-1]
    return scaled.round().long()                                             # same shape, long 0..L-1


class Generator(nn.Module):
    def __init__(self, latent_dim=100):
        """MLP latent_dim -> 128 -> 256 -> 512 -> 1024 -> 784 (the 2019 template): LeakyReLU(0.2) after each hidden
        layer, batch norm between the 256, 512 and 1024 linear layers and their activations, tanh output."""
        super().__init__()
        self.latent_dim = latent_dim
        layers = [nn.Linear(latent_dim, 128), nn.LeakyReLU(0.2)]
        for n_in, n_out in ((128, 256), (256, 512), (512, 1024)):
            layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.LeakyReLU(0.2)]
        layers += [nn.Linear(1024, NUM_PIXELS), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        """z [B, latent_dim] -> images [B, 1, 28, 28] in [-1, 1] (batch norm: B >= 2 in training mode)."""
        return self.net(z).view(-1, *IMAGE_SHAPE)                            # [B, 1, 28, 28]


class Discriminator(nn.Module):
    def __init__(self):
        """MLP 784 -> 512 -> 256 -> 1 with LeakyReLU(0.2) (the 2019 template); no output sigmoid: it returns logits."""
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(NUM_PIXELS, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 1),
        )

    def forward(self, x):
        """x [B, 1, 28, 28] floats in [-1, 1] -> logits [B]; D(x) = sigmoid(logit) is the probability x is real."""
        return self.net(x.reshape(x.shape[0], NUM_PIXELS)).squeeze(1)        # [B]


def discriminator_loss(real_logits, fake_logits):
    """-mean[log D(x)] - mean[log(1 - D(G(z)))]: minus the value function V(D, G) of Goodfellow et al. 2014, eq. 1,
    which D maximizes. real_logits [B], fake_logits [B'] -> scalar (2 log 2 when D outputs 1/2 everywhere)."""
    return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()   # []


def generator_loss(fake_logits):
    """-mean[log D(G(z))]: the non-saturating generator loss (Goodfellow et al. 2014, section 3: "rather than training
    G to minimize log(1 - D(G(z))) we can train G to maximize log D(G(z))", which gives strong gradients early on,
    when D rejects the fakes confidently). fake_logits [B] -> scalar (log 2 when D outputs 1/2)."""
    return -F.logsigmoid(fake_logits).mean()                                 # []


class GAN(nn.Module):
    def __init__(self, latent_dim=100, levels=256):
        """Both players in one module, so one state_dict saves (and loads) the generator and the discriminator.

        Args:
            latent_dim: dimensionality of z ~ N(0, I).
            levels: L, intensity levels per pixel (256 for the 2019 assignment's 8-bit MNIST).
        """
        super().__init__()
        self.latent_dim, self.levels = latent_dim, levels
        self.generator = Generator(latent_dim)
        self.discriminator = Discriminator()

    @property
    def device(self):
        return next(self.parameters()).device

    def sample_z(self, n):
        """n latents z ~ N(0, I) [n, latent_dim] from the global torch RNG, on the model's device."""
        return torch.randn(n, self.latent_dim, device=self.device)           # [n, latent_dim]

    @torch.no_grad()
    def generate(self, z):
        """Images as levels from latents z [n, latent_dim] -> long [n, 1, 28, 28] in 0..L-1. The generator runs in
        eval mode (batch norm uses its running statistics, so an image does not depend on the rest of the batch);
        the previous mode is restored afterwards, even on error."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            return to_levels(self.generator(z), self.levels)                 # [n, 1, 28, 28]
        finally:
            self.generator.train(was_training)

    def sample(self, n):
        """n images G(z), z ~ N(0, I): long levels [n, 1, 28, 28] in 0..L-1."""
        return self.generate(self.sample_z(n))                               # [n, 1, 28, 28]

    def interpolate(self, z0, z1, steps=7):
        """Images along the straight line from z0 to z1 [latent_dim] (or [1, latent_dim]): G(z0), `steps` points
        evenly spaced strictly between them, G(z1) -> long levels [steps + 2, 1, 28, 28] (9 for the 2019 question)."""
        z0, z1 = z0.reshape(1, -1).to(self.device), z1.reshape(1, -1).to(self.device)   # [1, latent_dim] each
        t = torch.linspace(0, 1, steps + 2, device=self.device).unsqueeze(1)   # [steps + 2, 1]
        z = (1 - t) * z0 + t * z1                                              # [steps + 2, latent_dim]
        z[0], z[-1] = z0[0], z1[0]                                             # the ends exactly, not 1 * z0 + 0 * z1
        return self.generate(z)                                                # [steps + 2, 1, 28, 28]


def _check_finite(loss, name):
    """Raise FloatingPointError on a NaN/inf loss, before it is backpropagated into any parameter."""
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"{name} is not finite ({loss.item()}): training diverged; lower the learning rate")


def discriminator_step(gan, real_levels, optimizer_d):
    """One Adam step of the discriminator on a batch of real images and as many fakes.

    real_levels: long [B, 1, 28, 28] in 0..L-1. The fakes are generated under no_grad, so no gradient reaches the
    generator (its batch norm, in training mode, still updates its running statistics: buffers, not parameters).
    Every .grad of both players is None afterwards, so neither optimizer can apply a stale gradient.
    Returns {"d_loss", "d_real" = mean D(x), "d_fake" = mean D(G(z))} as floats.
    """
    gan.zero_grad(set_to_none=True)
    real = to_unit(real_levels.to(gan.device), gan.levels)                   # [B, 1, 28, 28]
    with torch.no_grad():
        fake = gan.generator(gan.sample_z(real.shape[0]))                    # [B, 1, 28, 28]
    real_logits = gan.discriminator(real)                                    # [B]
    fake_logits = gan.discriminator(fake)                                    # [B]
    loss = discriminator_loss(real_logits, fake_logits)                      # []
    _check_finite(loss, "discriminator loss")
    loss.backward()
    optimizer_d.step()
    gan.zero_grad(set_to_none=True)
    return {"d_loss": loss.item(), "d_real": torch.sigmoid(real_logits).mean().item(),
            "d_fake": torch.sigmoid(fake_logits).mean().item()}


def generator_step(gan, batch_size, optimizer_g):
    """One Adam step of the generator on batch_size fresh fakes, with the non-saturating loss -log D(G(z)).

    The discriminator's parameters are frozen (requires_grad False) for the backward pass, so no gradient is
    accumulated on them; their flags are restored afterwards. Every .grad of both players is None afterwards.
    Returns {"g_loss", "d_fake" = mean D(G(z))} as floats.
    """
    gan.zero_grad(set_to_none=True)
    frozen = [p.requires_grad for p in gan.discriminator.parameters()]
    for p in gan.discriminator.parameters():
        p.requires_grad_(False)
    try:
        fake_logits = gan.discriminator(gan.generator(gan.sample_z(batch_size)))   # [B]
        loss = generator_loss(fake_logits)                                   # []
        _check_finite(loss, "generator loss")
        loss.backward()
        optimizer_g.step()
    finally:
        for p, flag in zip(gan.discriminator.parameters(), frozen):
            p.requires_grad_(flag)
        gan.zero_grad(set_to_none=True)
    return {"g_loss": loss.item(), "d_fake": torch.sigmoid(fake_logits).mean().item()}


def train_epoch(gan, loader, optimizer_g, optimizer_d):
    """One pass over `loader` (batches of long levels [B, 1, 28, 28], or (levels, labels) pairs as the project's
    loaders give them): per batch one discriminator step, then one generator step on B fakes.

    A batch of one image is skipped (no step, no draw from the RNG): the generator's batch norm in training mode
    has no batch statistics for one sample (torch raises ValueError). The shared loaders end an epoch with a smaller
    batch, of one image when the training set leaves one over (3,600 images at --batch_size 59); dropping it
    here, for the only family with batch norm, keeps the loaders and the other families' runs as they are, on
    the CPU's DataLoader and the GPU's DeviceBatches alike. The shuffle puts another image last next epoch.

    Returns the batch averages of "d_loss", "g_loss", "d_real" and "d_fake" (D(G(z)) as the discriminator step saw
    it, before its update). Raises FloatingPointError on a non-finite loss (before that step updates anything),
    ValueError when no batch of two or more images came.
    """
    gan.train()
    totals = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
    batches = 0
    for batch in loader:
        real_levels = batch[0] if isinstance(batch, (tuple, list)) else batch   # [B, 1, 28, 28]
        if real_levels.shape[0] < 2:
            continue
        d_stats = discriminator_step(gan, real_levels, optimizer_d)
        g_stats = generator_step(gan, real_levels.shape[0], optimizer_g)
        for key, value in (*d_stats.items(), ("g_loss", g_stats["g_loss"])):
            totals[key] += value
        batches += 1
    if batches == 0:
        raise ValueError("train_epoch: the loader yielded no batch of two or more images")
    return {key: value / batches for key, value in totals.items()}


def build(latent_dim=100, levels=256, lr=2e-4, betas=(0.5, 0.999), device="cpu"):
    """A GAN on `device` and one Adam optimizer per player (the DCGAN settings lr 2e-4, beta1 0.5; the 2019 template
    suggests lr 2e-4). Returns (gan, optimizer_g, optimizer_d)."""
    gan = GAN(latent_dim, levels).to(device)
    optimizer_g = torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=betas)
    optimizer_d = torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=betas)
    return gan, optimizer_g, optimizer_d
