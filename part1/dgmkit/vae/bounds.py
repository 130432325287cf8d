"""The VAE's bounds on log p(x): the single-sample ELBO (the assignment's loss), the training objectives (the mean of
K single-sample ELBOs; the K-sample IWAE bound of Burda et al. 2016) and the importance-weighted estimate used for
evaluation. Each takes a model with encode(imgs), push(z0, flow_params) and decoder (model.VAE).

Units: nats per image unless a name says bpd (bits per dimension, utils.elbo_to_bpd).
Sign: every returned loss is a *negative* bound (lower is better); log-weights are log-densities.
"""
import math

import torch
import torch.nn.functional as F

from utils import KLD, elbo_to_bpd, log_normal_from_eps, log_px_given_z, log_standard_normal, sample_reparameterize

OBJECTIVES = ("elbo", "iwae")


def log_weights(model, imgs, num_samples, posterior=None, max_latents=4096):
    """Per-sample terms of the K-sample bounds, z_k ~ q(z|x), the K samples of all B images decoded as
    one [B*K] batch (in chunks of at most max(B, max_latents) latents, to bound memory).

    Args:
        imgs: [B, 1, 28, 28] long levels 0..L-1; num_samples: K >= 1.
        posterior: (mean, log_std, flow_params) from model.encode(imgs), when already computed.
    Returns:
        dict of float64 [B, K] tensors, nats: "log_px" = log p(x|z_k), "log_pz" = log p(z_k),
        "log_q" = log q(z_k|x); log w_k = log_px + log_pz - log_q. Differentiable.
    """
    mean, log_std, flow_params = posterior if posterior is not None else model.encode(imgs)
    mean, log_std = mean.float(), log_std.float()  # [B, D]
    B, D = mean.shape
    per_chunk = max(1, max_latents // B)
    parts = {"log_px": [], "log_pz": [], "log_q": []}
    for start in range(0, num_samples, per_chunk):
        k = min(per_chunk, num_samples - start)
        eps = torch.randn(B, k, D, device=mean.device, dtype=mean.dtype)  # [B, k, D]
        z0 = mean.unsqueeze(1) + torch.exp(log_std).unsqueeze(1) * eps  # [B, k, D]
        z, log_det = model.push(z0, None if flow_params is None else flow_params.float())  # [B, k, D], [B, k]
        logits = model.decoder(z.reshape(B * k, D)).float()  # [B*k, L, 28, 28]
        targets = imgs.unsqueeze(1).expand(B, k, *imgs.shape[1:]).reshape(B * k, *imgs.shape[1:])  # [B*k, 1, 28, 28]
        parts["log_px"].append(log_px_given_z(logits, targets).view(B, k))  # [B, k]
        parts["log_pz"].append(log_standard_normal(z.double()))  # [B, k]
        log_q0 = log_normal_from_eps(eps.double(), log_std.double().unsqueeze(1))  # [B, k]
        parts["log_q"].append(log_q0 - log_det.double())  # change of variables: minus the flow's log|det|
    return {key: torch.cat(values, dim=1) for key, values in parts.items()}


def objective(model, imgs, name="elbo", num_samples=1):
    """The training loss of a batch and the ELBO terms logged beside it.

    K = 1, either objective: exactly model(imgs), the assignment's loss (for K = 1 the IWAE bound is the
    ELBO, Burda et al. 2016, so --objective iwae --train_samples 1 trains exactly like the default).
    elbo, K > 1: the mean of K single-sample ELBOs. iwae: -log (1/K) sum_k w_k, w_k = p(x|z_k) p(z_k) /
    q(z_k|x) (Burda et al. 2016, eq. 8), by logsumexp, with gradients through it.
    Returns:
        dict of scalar tensors: "loss" (the objective, nats per image, to minimise), "objective_bpd"
        (it in bpd), and the ELBO terms "rec_nats", "kl_nats", "bpd" (averages over images).
    """
    if num_samples == 1:  # the closed-form KL where there is one (VAE.forward), whichever the objective
        L_rec, L_reg, bpd = model(imgs)
        return {"loss": L_rec + L_reg, "objective_bpd": bpd, "rec_nats": L_rec, "kl_nats": L_reg, "bpd": bpd}
    posterior = model.encode(imgs)
    terms = log_weights(model, imgs, num_samples, posterior)  # [B, K] each
    log_w = terms["log_px"] + terms["log_pz"] - terms["log_q"]  # [B, K]
    rec = -terms["log_px"].mean()
    if model.flow_length:
        kl = (terms["log_q"] - terms["log_pz"]).mean()  # single-sample KL estimates, averaged over k
    else:
        kl = KLD(posterior[0].float(), posterior[1].float()).mean().double()  # closed form, as model(imgs) logs it
    if name == "iwae":
        loss = -(torch.logsumexp(log_w, dim=1) - math.log(num_samples)).mean()
    else:
        loss = -log_w.mean()
    bpd_of = lambda nats: elbo_to_bpd(nats, imgs.shape)  # noqa: E731
    return {"loss": loss.float(), "objective_bpd": bpd_of(loss).float(), "rec_nats": rec.float(),
            "kl_nats": kl.float(), "bpd": bpd_of(rec + kl).float()}


def single_sample_elbo(model, imgs, per_image=True):
    """The ELBO with one reparameterized sample z ~ q(z|x) per image: the one place it is written (VAE.forward
    averages it over the batch, objective with K = 1 is VAE.forward, evaluation keeps it per image).

    KL(q(z|x) || N(0, I)): the closed form without a flow; with one, the single-sample estimate
    log q_L(z_L|x) - log p(z_L) = log N(z_0; mean, std^2) - sum_l log|det_l| - log p(z_L) (Rezende & Mohamed
    2015, eq. 13; no closed form exists). Sampling, KL and cross-entropy run in fp32 even under bf16 autocast:
    only the convs and linear layers run in bf16.
    Args:
        imgs: [B, 1, 28, 28] long levels 0..L-1.
        per_image: True: float64 [B] terms (evaluation); False: fp32 scalars, averages over the B images, the
            cross-entropy summed over all pixels of the batch in one call (the assignment's training loss).
    Returns:
        dict: "rec" = -log p(x|z) and "kl", nats per image; "nelbo" = rec + kl; "mean", "log_std" [B, D] (the
        base Gaussian's); "kl_per_dim" [B, D] (closed form, only without a flow, else None); "posterior"
        (encode's output, to reuse).
    """
    posterior = model.encode(imgs)
    mean, log_std, flow_params = posterior  # [B, D] each, [B, P] or None
    mean, log_std = mean.float(), log_std.float()
    if flow_params is None:
        z = sample_reparameterize(mean, torch.exp(log_std))  # [B, D]
        if per_image:
            kl_per_dim = KLD(mean.unsqueeze(-1), log_std.unsqueeze(-1)).double()  # [B, D]: over 1-dim "vectors"
            kl = kl_per_dim.sum(dim=-1)  # [B]
        else:
            kl_per_dim, kl = None, KLD(mean, log_std).mean()
    else:
        eps = torch.randn_like(mean)  # [B, D]
        z, log_det = model.push(mean + torch.exp(log_std) * eps, flow_params.float())  # [B, D], [B]
        kl = log_normal_from_eps(eps, log_std) - log_det - log_standard_normal(z)  # [B]
        kl, kl_per_dim = kl.double() if per_image else kl.mean(), None
    logits = model.decoder(z).float()  # [B, L, 28, 28]
    if per_image:
        rec = -log_px_given_z(logits, imgs)  # [B], float64
    else:  # the pixels' cross-entropies summed (the images' log-likelihoods), then the mean over images
        rec = F.cross_entropy(logits, imgs.squeeze(1), reduction="sum") / imgs.shape[0]
    return {"nelbo": rec + kl, "rec": rec, "kl": kl, "mean": mean, "log_std": log_std, "kl_per_dim": kl_per_dim,
            "posterior": posterior}


def elbo_per_image(model, imgs):
    """single_sample_elbo per image (float64 [B] terms, nats per image): what evaluation averages."""
    return single_sample_elbo(model, imgs, per_image=True)


def iw_log_likelihood(model, imgs, num_samples, chunk_size=2048, posterior=None):
    """Importance-weighted estimate of log p(x) in nats per image with K = num_samples draws from q(z|x):

        log p(x) ~= log (1/K) sum_k exp(log w_k),  log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x),

    with the posterior's own log-density (flows included). Chunks of at most max(B, chunk_size)
    latents are combined with a running log-sum-exp in float64, so memory is bounded for any K.
    Returns:
        [B] float64 estimates of log p(x) (a lower bound in expectation, tight as K -> inf).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    posterior = posterior if posterior is not None else model.encode(imgs)
    B = imgs.shape[0]
    per_chunk = max(1, chunk_size // B)
    log_sum = torch.full((B,), -math.inf, dtype=torch.float64, device=imgs.device)  # [B]
    for start in range(0, num_samples, per_chunk):
        k = min(per_chunk, num_samples - start)
        terms = log_weights(model, imgs, k, posterior, max_latents=B * k)  # [B, k] each, one decoder call
        log_w = terms["log_px"] + terms["log_pz"] - terms["log_q"]  # [B, k]
        log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w, dim=1))  # [B]
    return log_sum - math.log(num_samples)  # [B]
