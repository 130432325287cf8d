"""Convolutional encoder and decoder of the VAE (the autoencoder-tutorial conv net, 28x28 input).

The encoder maps an image of L-level pixels (L = 16 in the assignment) to the parameters (mean, log_std) of a
diagonal Gaussian q(z|x); the decoder maps a latent z to L logits per pixel, one categorical per pixel.
"""
import torch.nn as nn


class CNNEncoder(nn.Module):
    def __init__(self, num_input_channels: int = 1, num_filters: int = 32, z_dim: int = 20, levels: int = 16):
        """Five 3x3 convs (28 -> 14 -> 7 -> 4) with GELU, then a linear layer to 2 * z_dim.

        Args:
            num_input_channels: channels of the image (1 for (Fashion)MNIST).
            num_filters: channels of the first convs; later ones use 2 * num_filters.
            z_dim: dimensionality of the latent space.
            levels: L, intensity levels of the input pixels (0..L-1 are scaled to [-1, 1]).
        """
        super().__init__()
        c_hid = num_filters
        self.z_dim, self.levels = z_dim, levels
        self.net = nn.Sequential(
            nn.Conv2d(num_input_channels, c_hid, kernel_size=3, padding=1, stride=2),  # 28x28 -> 14x14
            nn.GELU(),
            nn.Conv2d(c_hid, c_hid, kernel_size=3, padding=1),  # 14x14 -> 14x14
            nn.GELU(),
            nn.Conv2d(c_hid, 2 * c_hid, kernel_size=3, padding=1, stride=2),  # 14x14 -> 7x7
            nn.GELU(),
            nn.Conv2d(2 * c_hid, 2 * c_hid, kernel_size=3, padding=1),  # 7x7 -> 7x7
            nn.GELU(),
            nn.Conv2d(2 * c_hid, 2 * c_hid, kernel_size=3, padding=1, stride=2),  # 7x7 -> 4x4
            nn.GELU(),
            nn.Flatten(),  # [B, 2*c_hid, 4, 4] -> [B, 2*c_hid*16]
            nn.Linear(2 * 16 * c_hid, 2 * z_dim),
        )

    def forward(self, x):
        """
        Args:
            x: [B, C, 28, 28] integer images with values 0..L-1.
        Returns:
            mean: [B, z_dim] means of q(z|x).
            log_std: [B, z_dim] log standard deviations (unconstrained, any real value).
        """
        mean, log_std = self.net[-1](self.features(x)).chunk(2, dim=1)  # each [B, z_dim]
        return mean, log_std

    def features(self, x):
        """The flattened conv features [B, 2*num_filters*16] that the last linear layer maps to (mean, log_std);
        a flow posterior reads its per-image parameters from the same features."""
        x = x.float() / (self.levels - 1) * 2 - 1  # levels 0..L-1 -> [-1, 1]
        return self.net[:-1](x)  # [B, 2*c_hid*16]

    @property
    def feature_dim(self):
        return self.net[-1].in_features


class CNNDecoder(nn.Module):
    def __init__(self, num_input_channels: int = 16, num_filters: int = 32, z_dim: int = 20):
        """A linear layer to a 4x4 map, then transposed convs mirroring the encoder (4 -> 7 -> 14 -> 28).

        Args:
            num_input_channels: logits per pixel, i.e. the number of intensity levels L (16 for 4 bits).
            num_filters: channels of the last convs; earlier ones use 2 * num_filters.
            z_dim: dimensionality of the latent space.
        """
        super().__init__()
        c_hid = num_filters
        self.linear = nn.Sequential(nn.Linear(z_dim, 2 * 16 * c_hid), nn.GELU())
        self.net = nn.Sequential(
            # output_padding 0 here: (4 - 1) * 2 - 2 + 3 = 7, not 8 as in the 32x32 tutorial.
            nn.ConvTranspose2d(2 * c_hid, 2 * c_hid, kernel_size=3, output_padding=0, padding=1, stride=2),  # 4x4 -> 7x7
            nn.GELU(),
            nn.Conv2d(2 * c_hid, 2 * c_hid, kernel_size=3, padding=1),  # 7x7 -> 7x7
            nn.GELU(),
            nn.ConvTranspose2d(2 * c_hid, c_hid, kernel_size=3, output_padding=1, padding=1, stride=2),  # 7x7 -> 14x14
            nn.GELU(),
            nn.Conv2d(c_hid, c_hid, kernel_size=3, padding=1),  # 14x14 -> 14x14
            nn.GELU(),
            nn.ConvTranspose2d(c_hid, num_input_channels, kernel_size=3, output_padding=1, padding=1, stride=2),  # 14x14 -> 28x28
        )

    def forward(self, z):
        """
        Args:
            z: [B, z_dim] latent vectors.
        Returns:
            x: [B, L, 28, 28] logits of the per-pixel categoricals (no softmax).
        """
        x = self.linear(z)  # [B, 2*c_hid*16]
        x = x.reshape(x.shape[0], -1, 4, 4)  # [B, 2*c_hid, 4, 4]
        return self.net(x)  # [B, L, 28, 28]

    @property
    def device(self):
        """The device the decoder's parameters live on."""
        return next(self.parameters()).device
