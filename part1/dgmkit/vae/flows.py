"""Amortized normalizing flows for the VAE posterior q(z|x): planar and radial layers.

Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015. The encoder emits, per
image, a flat vector of raw (unconstrained) flow parameters; this module constrains them so that each
layer is invertible (their appendix A) and applies the layers, returning the transformed sample and
sum_l log|det df_l/dz| in nats, the term the flow ELBO subtracts from log q0(z0) (their eq. 13/15).

Units: z is latent-space (dimensionless); every log-determinant is in nats, one value per sample.
Everything runs in the dtype of z (float32 or float64). Maths layer: imports no project module.
"""
import torch
import torch.nn.functional as F

FLOWS = ("planar", "radial")

# Floor on ||w||^2 in the planar constraint's denominator only: the encoder can emit w = 0 exactly
# (e.g. at initialisation), where (m(w.u) - w.u) w / ||w||^2 is 0/0; with max(||w||^2, eps) the correction
# goes to 0 with w instead (u_hat -> u). A floor, not "+ eps": adding eps shifts w.u_hat by about
# eps |w.u| / ||w||^2, which exceeds the margin w.u_hat + 1 = softplus(w.u) ~ exp(w.u) once w.u < -20 or
# so and breaks invertibility; with the floor, w.u_hat = m(w.u) exactly whenever ||w||^2 >= eps.
_W_NORM_EPS = 1e-8


def param_count(kind: str, z_dim: int) -> int:
    """Raw parameters per layer: planar 2*z_dim + 1 (u, w, b); radial z_dim + 2 (z0, alpha_raw, beta_raw)."""
    if kind not in FLOWS:
        raise ValueError(f"unknown flow kind {kind!r}; expected one of {FLOWS}")
    if int(z_dim) < 1:
        raise ValueError(f"z_dim must be a positive integer, got {z_dim!r}")
    return 2 * int(z_dim) + 1 if kind == "planar" else int(z_dim) + 2


def planar(z, u, w, b):
    """One planar layer f(z) = z + û h(wᵀz + b), h = tanh (Rezende & Mohamed 2015, eq. 10), with the
    invertibility constraint of their appendix A.1: û = u + (m(wᵀu) − wᵀu) w / ‖w‖²,
    m(a) = −1 + softplus(a), so wᵀû > −1. log|det ∂f/∂z| = log|1 + ûᵀ h'(wᵀz + b) w| (eq. 11-12).
    z: [..., D]; u, w: broadcastable to [..., D]; b: broadcastable to [...] (z's leading dims).
    Returns (f(z) [..., D], log_det [...]) in nats."""
    wu = (w * u).sum(-1)                                              # [...] wᵀu (raw)
    w_sq = (w * w).sum(-1)                                            # [...] ‖w‖²
    sp = F.softplus(wu)                                               # [...] = 1 + m(wᵀu) > 0
    # Appendix A.1: shift u along w so that wᵀû = m(wᵀu) = -1 + softplus(wᵀu) > -1.
    w_sq_safe = w_sq.clamp_min(_W_NORM_EPS)                           # [...] max(‖w‖², ε)
    scale = (sp - 1.0 - wu) / w_sq_safe                               # [...] (m - wᵀu) / ‖w‖²
    u_hat = u + scale.unsqueeze(-1) * w                               # [..., D]
    a = (w * z).sum(-1) + b                                           # [...] pre-activation wᵀz + b
    t = torch.tanh(a)                                                 # [...]
    f = z + u_hat * t.unsqueeze(-1)                                   # [..., D] eq. 10
    # h'(a) = sech²(a) = 4e/(1+e)², e = exp(-2|a|): no overflow, and full relative precision in the tails
    # (1 - tanh² rounds to 0 there); the abs() is harmless since sech² is even.
    e = torch.exp(-2.0 * a.abs())                                     # [...] in (0, 1]
    h_prime = 4.0 * e / (1.0 + e) ** 2                                # [...] in (0, 1]
    # 1 + wᵀû in closed form, exactly what the û above gives: with q = ‖w‖² / max(‖w‖², ε) (= 1 unless
    # ‖w‖² < ε), 1 + wᵀû = softplus(wᵀu) q + (1 + wᵀu)(1 - q). Written this way it keeps its precision when
    # wᵀû ≈ -1 (wᵀu very negative), where 1 + wᵀû = softplus(wᵀu) is tiny and -1 + sp would round to -1.
    q = w_sq / w_sq_safe                                              # [...] in [0, 1]
    one_plus_wu_hat = sp * q + (1.0 + wu) * (1.0 - q)                 # [...] > 0 (see note below)
    # eq. 11-12: det = 1 + h' wᵀû = (1 - h') + h'(1 + wᵀû) = tanh² + h'(1 + wᵀû), a sum of a non-negative
    # and a positive term, so no cancellation and no log of a rounding error. (The guarantee needs
    # 1 + wᵀû > 0: exact when ‖w‖² ≥ ε; below, it can fail only if also wᵀu < -1, i.e. ‖u‖ > 1e4.)
    log_det = torch.log(t * t + h_prime * one_plus_wu_hat)            # [...] nats
    return f, log_det


def radial(z, z0, alpha_raw, beta_raw):
    """One radial layer f(z) = z + β h(α, r)(z − z0), r = ‖z − z0‖, h = 1/(α + r) (eq. 14),
    with α = softplus(alpha_raw) > 0 and β = −α + softplus(beta_raw) ≥ −α (invertibility, appendix A.2).
    log|det| = (d − 1) log(1 + βh) + log(1 + βh + β h'(α, r) r), h' = −1/(α + r)².
    z: [..., D]; z0 broadcastable to [..., D]; alpha_raw, beta_raw broadcastable to [...].
    Returns (f(z) [..., D], log_det [...]) in nats."""
    d = z.shape[-1]
    alpha = F.softplus(alpha_raw)                                     # [...] α > 0
    s = F.softplus(beta_raw)                                          # [...] s = α + β > 0
    diff = z - z0                                                     # [..., D]
    r = torch.linalg.vector_norm(diff, dim=-1)                        # [...] r = ‖z − z0‖
    ar = alpha + r                                                    # [...] α + r > 0
    # With β = -α + s: 1 + βh = (α + r + β)/(α + r) = (r + s)/(α + r). Using s directly (not -α + s)
    # keeps 1 + βh exact when s ≪ α, where β = -α + s would round to -α and collapse z onto z0.
    ratio = (r + s) / ar                                              # [...] 1 + βh > 0
    f = z0 + diff * ratio.unsqueeze(-1)                               # [..., D] eq. 14: z0 + (1 + βh)(z − z0)
    # 1 + βh + βh'r = ((α + r)² + βα)/(α + r)² = (r(r + 2α) + sα)/(α + r)²: all terms are positive,
    # so both logs below stay finite even for s → 0 (beta_raw → -∞) and r → 0.
    log_det = ((d - 1) * (torch.log(r + s) - torch.log(ar))
               + torch.log(r * (r + 2.0 * alpha) + s * alpha) - 2.0 * torch.log(ar))  # [...] nats
    return f, log_det


def _split(kind, p, d):
    """Split one layer's raw parameters p [..., P] into the tuple its layer function takes."""
    if kind == "planar":
        return p[..., :d], p[..., d:2 * d], p[..., 2 * d]             # u [..., D], w [..., D], b [...]
    return p[..., :d], p[..., d], p[..., d + 1]                       # z0 [..., D], alpha_raw, beta_raw [...]


def flow(kind: str, z, params, length: int):
    """Apply `length` layers of kind `kind` in sequence. params: [..., length * param_count(kind, D)]
    raw parameters, broadcastable against z's leading dims (e.g. z [K, B, D] with params [B, P] — the
    caller unsqueezes — or z [B, D] with params [B, P]). Layer l uses params[..., l*P:(l+1)*P], split as
    (u, w, b) for planar and (z0, alpha_raw, beta_raw) for radial, in that order.
    Returns (z_L [..., D], sum of log|det| over layers [...]). With length 0 returns (z, zeros)."""
    if kind not in FLOWS:
        raise ValueError(f"unknown flow kind {kind!r}; expected one of {FLOWS}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"flow length must be a non-negative int, got {length!r}")
    if z.dim() < 1:
        raise ValueError("z must have a last (latent) dimension, got a 0-d tensor")
    d = z.shape[-1]
    p = param_count(kind, d)
    if params.shape[-1] != length * p:
        raise ValueError(f"{kind} flow of length {length} on z_dim {d} needs params[..., {length * p}] "
                         f"({length} x {p}), got last dim {params.shape[-1]}")
    layer = planar if kind == "planar" else radial
    log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)  # [...]
    for l in range(length):
        z, ld = layer(z, *_split(kind, params[..., l * p:(l + 1) * p], d))  # [..., D], [...]
        log_det = log_det + ld                                        # [...] nats, log-dets add (eq. 13)
    return z, log_det
