"""The VAE: conv encoder -> q(z|x) (a diagonal Gaussian, optionally pushed through an amortized flow),
standard normal prior, categorical decoder, and ancestral sampling. Its bounds (the ELBO, the IWAE objective
and the importance-weighted estimate of log p(x)) are bounds.py's.

Units: nats per image unless a name says bpd (bits per dimension, utils.elbo_to_bpd).
Sign: every returned loss is a *negative* bound (lower is better); log-weights are log-densities.
"""
import torch
import torch.nn as nn

from cnn_encoder_decoder import CNNDecoder, CNNEncoder
from dgmkit.vae import flows
from dgmkit.vae.bounds import single_sample_elbo
from utils import elbo_to_bpd

FLOW_KINDS = ("none",) + flows.FLOWS


class VAE(nn.Module):
    def __init__(self, num_filters, z_dim, lr, flow="none", flow_length=0, levels=16):
        """A VAE with a conv encoder q(z|x), a standard normal prior and a categorical decoder.

        Args:
            num_filters: channels of the first conv layers (later ones use twice as many).
            z_dim: dimensionality of the latent space.
            lr: the Adam learning rate the model is trained with (kept for the assignment's API;
                checkpoints record it in their `args`).
            flow: "none", "planar" or "radial": q(z|x) is N(mean, std^2) pushed through `flow_length`
                layers of that flow, their parameters produced per image by the encoder (amortized).
            flow_length: number of flow layers (0: the plain diagonal Gaussian).
            levels: L, intensity levels per pixel (2^bits: 16 in the assignment, 2 for binarized MNIST, where the
                L-way categorical is exactly a Bernoulli); the decoder emits L logits per pixel.
        """
        super().__init__()
        if flow not in FLOW_KINDS:
            raise ValueError(f"flow must be one of {FLOW_KINDS}, got {flow!r}")
        self.z_dim, self.lr, self.levels = z_dim, lr, levels
        self.flow, self.flow_length = flow, flow_length if flow != "none" else 0
        self.encoder = CNNEncoder(z_dim=z_dim, num_filters=num_filters, levels=levels)
        self.decoder = CNNDecoder(num_input_channels=levels, z_dim=z_dim, num_filters=num_filters)
        if self.flow_length:
            # The flow's raw parameters come from the same conv features as mean and log-std.
            self.flow_head = nn.Linear(self.encoder.feature_dim, self.flow_length * flows.param_count(flow, z_dim))

    def encode(self, imgs):
        """q(z|x) of a batch: mean, log_std [B, D] and the raw flow parameters [B, P] (None without a flow)."""
        if not self.flow_length:
            mean, log_std = self.encoder(imgs)  # [B, D] each
            return mean, log_std, None
        features = self.encoder.features(imgs)  # [B, F]
        mean, log_std = self.encoder.net[-1](features).chunk(2, dim=1)  # [B, D] each
        return mean, log_std, self.flow_head(features)  # [B, P]

    def push(self, z0, flow_params):
        """z_L = f_L(...f_1(z_0)) and sum_l log|det df_l/dz|: z0 [..., D] -> ([..., D], [...] nats)."""
        if not self.flow_length:
            return z0, torch.zeros(z0.shape[:-1], dtype=z0.dtype, device=z0.device)
        params = flow_params.view(flow_params.shape[:1] + (1,) * (z0.dim() - 2) + flow_params.shape[1:])
        return flows.flow(self.flow, z0, params, self.flow_length)

    def forward(self, imgs):
        """The negative ELBO of a batch, with one reparameterized sample z per image.

        Args:
            imgs: [B, 1, 28, 28] long images with values 0..L-1 (L = self.levels).
        Returns (three scalars, each an average over the B images):
            L_rec: reconstruction loss -log p(x|z), cross-entropy summed over the 784 pixels, nats.
            L_reg: KL(q(z|x) || N(0, I)), nats: closed form without a flow; with one, the single-sample
                estimate log q_L(z_L|x) - log p(z_L) (no closed form exists).
            bpd: (L_rec + L_reg) in bits per dimension.
        """
        terms = single_sample_elbo(self, imgs, per_image=False)
        return terms["rec"], terms["kl"], elbo_to_bpd(terms["rec"] + terms["kl"], imgs.shape)

    @torch.no_grad()
    def sample(self, batch_size):
        """Ancestral sampling: z ~ N(0, I), then every pixel from its categorical p(x|z).

        Returns:
            x_samples: [B, 1, 28, 28] long images with values 0..L-1 (L = self.levels).
        """
        z = torch.randn(batch_size, self.z_dim, device=self.device)  # [B, z_dim]
        logits = self.decoder(z)  # [B, L, 28, 28]
        probs = logits.float().softmax(dim=1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])  # [B*784, 16]
        x_samples = torch.multinomial(probs, num_samples=1)  # [B*784, 1]
        return x_samples.reshape(batch_size, 1, *logits.shape[2:])  # [B, 1, 28, 28]

    @property
    def device(self):
        return self.decoder.device
