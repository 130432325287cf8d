"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP") for quantized images.

Architecture (a faithful smaller version of the paper's multi-scale flow, sec. 3.6, for 1x28x28):
    scale 1  on 1x28x28: 3 checkerboard couplings, squeeze -> 4x14x14, 3 channel couplings,
             factor out half the channels (z_1: 2x14x14);
    scale 2  on 2x14x14: 3 checkerboard couplings, squeeze -> 8x7x7, 3 channel couplings,
             factor out half (z_2: 4x7x7);
    final    on 4x7x7: 4 checkerboard couplings (7x7 is odd, so no further squeeze; the paper's last
             scale is 4 checkerboard couplings too) -> z_3: 4x7x7.      392 + 196 + 196 = 784 dimensions.
Masks alternate between couplings (checkerboard parity 0/1, channel halves swapped) so every dimension
is transformed. s and t come from one small conv net per coupling (3x3 conv -> `num_blocks` residual
blocks of two 3x3 convs with `hidden_channels` channels -> 3x3 conv, zero-initialised, so the flow starts
as the exact identity); s = scale * tanh(raw_s) with a learnable per-channel scale (init 1). No batch norm:
every image's transform depends on that image only. Default RealNVP(): 632,545 parameters.

Pre-processing (sec. 4.1): y = (x + u) / L, u ~ U[0,1)^D (uniform dequantization), then
s = alpha + (1 - 2 alpha) y, w = logit(s), alpha = 0.05 (the paper writes alpha + (1 - alpha) y; the symmetric
form keeps s in [alpha, 1 - alpha]); the flow acts on w. Note: y in [0,1]^D maps onto
the box w in [logit(alpha), logit(1 - alpha)]^D only, so the density of y integrates over [0,1]^D to
P_{z~N(0,I)}(f^-1(z) in that box) <= 1 (about 0.08 for the identity flow on 784 pixels, closer to 1 once
trained). The cell probabilities P(x) then sum to <= 1 and the bound below is looser, never invalid.
Units: nats per image unless a name says bpd. No torch.distributions (the assignment forbids it).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ALPHA = 0.05  # the paper's logit pre-processing constant (sec. 4.1)
LOG_2PI = math.log(2 * math.pi)


def log_standard_normal(z):
    """log N(z; 0, I) in nats summed over all but the batch dimension: [B, ...] -> [B]."""
    return (-0.5 * z ** 2 - 0.5 * LOG_2PI).flatten(1).sum(dim=1)


def checkerboard(h, w, parity, device=None, dtype=None):
    """The checkerboard mask b [1, 1, h, w]: 1 where (i + j) % 2 == parity (those pixels are kept)."""
    i = torch.arange(h, device=device).view(-1, 1)
    j = torch.arange(w, device=device).view(1, -1)
    return ((i + j) % 2 == parity).to(dtype or torch.float32).view(1, 1, h, w)


class STNet(nn.Module):
    """Conv net for s and t: [B, c_in, H, W] -> raw s, t [B, c_out, H, W] each (zero at initialisation)."""

    def __init__(self, c_in, c_out, hidden_channels, num_blocks):
        super().__init__()
        self.inp = nn.Conv2d(c_in, hidden_channels, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.ReLU(), nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1),
            nn.ReLU(), nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1)) for _ in range(num_blocks))
        self.out = nn.Conv2d(hidden_channels, 2 * c_out, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # s = t = 0: the coupling starts as the identity
        nn.init.zeros_(self.out.bias)
        self.scale = nn.Parameter(torch.ones(1, c_out, 1, 1))  # learnable per-channel bound on |s|

    def forward(self, h):
        h = self.inp(h)  # [B, hidden, H, W]
        for block in self.blocks:
            h = h + block(h)  # residual block, [B, hidden, H, W]
        raw_s, t = self.out(F.relu(h)).chunk(2, dim=1)  # [B, c_out, H, W] each
        return self.scale * torch.tanh(raw_s), t  # s bounded in (-scale, scale) for stability


class CheckerboardCoupling(nn.Module):
    """Affine coupling with a checkerboard mask b (RealNVP eq. 9):
        y = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x)),  log|det J| = sum (1 - b) * s   (eq. 6)."""

    def __init__(self, channels, parity, hidden_channels, num_blocks):
        super().__init__()
        self.parity = parity
        self.net = STNet(channels + 1, channels, hidden_channels, num_blocks)  # +1: the mask as an input channel

    def _st(self, x_kept, b):
        s, t = self.net(torch.cat([x_kept, b.expand(x_kept.shape[0], 1, -1, -1)], dim=1))  # [B, C, H, W] each
        return s * (1 - b), t * (1 - b)  # kept pixels: s = t = 0, so exactly invertible

    def forward(self, x):
        """x [B, C, H, W] -> (y [B, C, H, W], log_det [B] nats)."""
        b = checkerboard(x.shape[2], x.shape[3], self.parity, x.device, x.dtype)  # [1, 1, H, W]
        s, t = self._st(x * b, b)  # [B, C, H, W] each
        y = b * x + (1 - b) * (x * torch.exp(s) + t)  # eq. 9
        return y, s.flatten(1).sum(dim=1)

    def inverse(self, y):
        """y [B, C, H, W] -> x: x = b * y + (1 - b) * (y - t(b * y)) * exp(-s(b * y)) (eq. 9 inverted)."""
        b = checkerboard(y.shape[2], y.shape[3], self.parity, y.device, y.dtype)
        s, t = self._st(y * b, b)  # b * y = b * x: the same s, t as forward
        return b * y + (1 - b) * ((y - t) * torch.exp(-s))


class ChannelCoupling(nn.Module):
    """Affine coupling with a channel mask (RealNVP eq. 4-5): with x = (x_a, x_b) the two channel halves,
        y_a = x_a,  y_b = x_b * exp(s(x_a)) + t(x_a),  log|det J| = sum s(x_a)   (eq. 6).
    flip=True swaps the halves' roles (x_b conditions x_a)."""

    def __init__(self, channels, flip, hidden_channels, num_blocks):
        super().__init__()
        self.flip, self.half = flip, channels // 2
        self.net = STNet(self.half, channels - self.half, hidden_channels, num_blocks)

    def _split(self, x):
        a, b = x[:, :self.half], x[:, self.half:]  # [B, C/2, H, W] each
        return (b, a) if self.flip else (a, b)

    def _join(self, cond, trans):
        return torch.cat([trans, cond] if self.flip else [cond, trans], dim=1)  # [B, C, H, W]

    def forward(self, x):
        """x [B, C, H, W] -> (y [B, C, H, W], log_det [B] nats)."""
        cond, trans = self._split(x)
        s, t = self.net(cond)  # [B, C/2, H, W] each
        return self._join(cond, trans * torch.exp(s) + t), s.flatten(1).sum(dim=1)  # eq. 4-5, 6

    def inverse(self, y):
        """y [B, C, H, W] -> x: x_b = (y_b - t(y_a)) * exp(-s(y_a)) (eq. 7-8)."""
        cond, trans = self._split(y)
        s, t = self.net(cond)
        return self._join(cond, (trans - t) * torch.exp(-s))


class Squeeze(nn.Module):
    """Space-to-depth (sec. 3.6): [B, C, H, W] -> [B, 4C, H/2, W/2], each 2x2 square becomes 4 channels
    (channel 4c + 2i + j holds pixel (i, j) of the square). A permutation: log|det J| = 0."""

    def forward(self, x):
        return F.pixel_unshuffle(x, 2), x.new_zeros(x.shape[0])  # [B, 4C, H/2, W/2], [B]

    def inverse(self, y):
        return F.pixel_shuffle(y, 2)  # [B, C, H, W]


class LogitPreprocess(nn.Module):
    """y in [0,1]^D -> w = logit(alpha + (1 - 2 alpha) y) (sec. 4.1), elementwise; its log|det J| is
    sum over pixels of log((1 - 2 alpha) / (s (1 - s))), s = alpha + (1 - 2 alpha) y."""

    def __init__(self, alpha=ALPHA):
        super().__init__()
        self.alpha = alpha

    def forward(self, y):
        """y [B, C, H, W] in [0, 1] -> (w [B, C, H, W], log_det [B] nats)."""
        s = self.alpha + (1 - 2 * self.alpha) * y  # [B, C, H, W], in [alpha, 1 - alpha]
        w = torch.log(s) - torch.log1p(-s)  # logit(s)
        log_det = math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)  # d logit(s)/dy = (1-2a)/(s(1-s))
        return w, log_det.flatten(1).sum(dim=1)

    def inverse(self, w):
        """w -> y = (sigmoid(w) - alpha) / (1 - 2 alpha) (outside [0, 1] when w leaves the box)."""
        return (torch.sigmoid(w) - self.alpha) / (1 - 2 * self.alpha)


class RealNVP(nn.Module):
    def __init__(self, levels=256, hidden_channels=32, num_blocks=2, image_shape=(1, 28, 28), num_scales=2,
                 couplings=3, final_couplings=4, alpha=ALPHA):
        """A multi-scale RealNVP density on [0,1]^D for images of L = `levels` integer levels.

        Args:
            levels: L, intensity levels per pixel (2^bits); the data are long tensors with values 0..L-1.
            hidden_channels, num_blocks: width and residual blocks of every coupling's s/t conv net.
            image_shape: (C, H, W); H and W must be divisible by 2^num_scales (28x28: num_scales <= 2).
            num_scales: scales of [couplings checkerboard, squeeze, couplings channel, factor out half].
            couplings: couplings per mask type per scale (the paper's 3); final_couplings: checkerboard
                couplings on what is left after the last scale (the paper's 4).
            alpha: the logit pre-processing constant (the paper's 0.05).
        """
        super().__init__()
        self.levels, self.image_shape, self.alpha = levels, tuple(image_shape), alpha
        self.preprocess = LogitPreprocess(alpha)
        c, h, w = self.image_shape
        kw = dict(hidden_channels=hidden_channels, num_blocks=num_blocks)
        self.scales, self.latent_shapes = nn.ModuleList(), []
        for _ in range(num_scales):
            if h % 2 or w % 2:
                raise ValueError(f"cannot squeeze {h}x{w}: use fewer scales than {num_scales}")
            layers = [CheckerboardCoupling(c, k % 2, **kw) for k in range(couplings)] + [Squeeze()]
            c, h, w = 4 * c, h // 2, w // 2
            layers += [ChannelCoupling(c, k % 2 == 1, **kw) for k in range(couplings)]
            self.scales.append(nn.ModuleList(layers))
            self.latent_shapes.append((c - c // 2, h, w))  # factored out; the other c // 2 channels go on
            c = c // 2
        self.final = nn.ModuleList(CheckerboardCoupling(c, k % 2, **kw) for k in range(final_couplings))
        self.latent_shapes.append((c, h, w))
        self.dims = math.prod(self.image_shape)  # D (784 for 1x28x28)

    def f(self, w):
        """The flow z = f(w) on pre-processed images: w [B, C, H, W] -> (z_list, log_det [B] nats), z_list
        the factored-out latents, shapes self.latent_shapes with a batch dim ([B, 2, 14, 14], [B, 4, 7, 7],
        [B, 4, 7, 7] for 28x28). log_det = sum of the layers' log|det J| (the chain rule)."""
        zs, log_det = [], w.new_zeros(w.shape[0])
        h = w
        for layers in self.scales:
            for layer in layers:
                h, ld = layer(h)
                log_det = log_det + ld  # [B]
            k = h.shape[1] - h.shape[1] // 2
            zs.append(h[:, :k])  # factor out (sec. 3.6): z_i = first half of the channels
            h = h[:, k:]
        for layer in self.final:
            h, ld = layer(h)
            log_det = log_det + ld
        zs.append(h)
        return zs, log_det

    def f_inverse(self, zs):
        """w = f^-1(z_list): the latents of f (shapes self.latent_shapes plus batch) -> w [B, C, H, W]."""
        h = zs[-1]
        for layer in reversed(self.final):
            h = layer.inverse(h)
        for layers, z in zip(reversed(self.scales), reversed(zs[:-1])):
            h = torch.cat([z, h], dim=1)  # undo the factoring out
            for layer in reversed(layers):
                h = layer.inverse(h)
        return h

    def log_prob_continuous(self, y, return_log_det=False):
        """log p(y) [B] nats, the density of y [B, C, H, W] in [0,1]^D: change of variables through the
        pre-processing and the flow (sec. 3.1), log p(y) = sum_i log N(z_i; 0, I) + log|det dw/dy| + log|det dz/dw|.
        return_log_det: also return the total log-det [B] (pre-processing + flow)."""
        w, ld_pre = self.preprocess(y)  # [B, C, H, W], [B]
        zs, ld_flow = self.f(w)
        log_det = ld_pre + ld_flow  # [B]
        log_p = sum(log_standard_normal(z) for z in zs) + log_det  # [B]
        return (log_p, log_det) if return_log_det else log_p

    def dequantize(self, imgs):
        """y = (x + u) / L, u ~ U[0,1)^D from the global RNG: imgs [B, C, H, W] long -> y float, in [0, 1)."""
        x = imgs.to(self.dtype)
        return (x + torch.rand_like(x)) / self.levels

    def forward(self, imgs):
        """The training objective of a batch, one dequantization draw per image.

        Args:
            imgs: [B, C, H, W] long levels 0..L-1.
        Returns dict of scalars (averages over the B images):
            "nll_nats": -(log p(y) - D log L), y = (x + u) / L: the negative single-draw bound on
                -log P(x) (Theis et al. 2016), nats per image; what training minimises.
            "bpd": nll_nats / (D ln 2), bits per dimension (comparable with a VAE's on the same data).
            "logdet_nats": the mean total log|det J| (pre-processing + flow), nats per image.
        """
        log_p, log_det = self.log_prob_continuous(self.dequantize(imgs), return_log_det=True)  # [B] each
        nll = -(log_p - self.dims * math.log(self.levels)).mean()  # the -D log L: density on cells of width 1/L
        return {"nll_nats": nll, "bpd": nll / (self.dims * math.log(2)), "logdet_nats": log_det.mean()}

    @torch.no_grad()
    def sample(self, n, temperature=1.0):
        """n images: z ~ N(0, T^2 I), w = f^-1(z), y = inverse pre-processing, level = clamp(floor(y L), 0, L-1).
        Uses only the global torch RNG. Returns [n, C, H, W] long levels 0..L-1."""
        zs = [temperature * torch.randn(n, *shape, device=self.device, dtype=self.dtype)
              for shape in self.latent_shapes]  # [n, 2, 14, 14], [n, 4, 7, 7], [n, 4, 7, 7] for 28x28
        y = self.preprocess.inverse(self.f_inverse(zs))  # [n, C, H, W]
        return torch.floor(y * self.levels).clamp(0, self.levels - 1).long()

    @property
    def device(self):
        return next(self.parameters()).device  # the first coupling's first conv weight

    @property
    def dtype(self):
        return next(self.parameters()).dtype


@torch.no_grad()
def dequantized_nll(model, imgs, draws=1):
    """Per-image negative dequantization bounds, nats: imgs [B, C, H, W] long -> [B] float64.

    Each draw u ~ U[0,1)^D gives the single-sample estimate -(log p((x + u)/L) - D log L); the result is their
    average over `draws`. Its expectation is -(E_u[log p((x + u)/L)] - D log L), an upper bound on -log P(x)
    (Jensen: log P(x) = log E_u[p((x + u)/L)] - D log L >= E_u[log p] - D log L), whatever the number of
    draws: more draws lower the variance, not the bound (unlike importance-weighted bounds).
    """
    total = torch.zeros(imgs.shape[0], dtype=torch.float64, device=imgs.device)
    for _ in range(draws):
        log_p = model.log_prob_continuous(model.dequantize(imgs)).double()  # [B]
        total += -(log_p - model.dims * math.log(model.levels))
    return total / draws
