"""Dataset-level estimates of log p(x): the ELBO and the importance-weighted (IW) bound of Burda et al. (2016),

    log p(x) >= E[ log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) ],  z_k ~ q(z|x),

per image and summarised over a split (means with standard errors, per class, latent diagnostics).
Names follow the run folder's schema: bpd / nelbo_nats (negative ELBO), iw_bpd / iw_nats (negative
IW bound), gap_bpd (their difference), rec_nats, kl_nats; "_se" is a standard error over images.
"""
import math

import torch
from tqdm import tqdm

from dgmkit.contexts import eval_mode, forked_rng
from dgmkit.data.datasets import CLASSES, DATASETS
from dgmkit.errors import UserError
from dgmkit.stats import mean_and_se
from dgmkit.vae.bounds import elbo_per_image, iw_log_likelihood
from utils import elbo_to_bpd

# Burda et al. 2016: unit d is active when Cov_x(E_q[z_d]) > 0.01. Measured on mu_0(x), the mean of the base
# Gaussian q_0(z_0|x): without a flow that is E_q[z_d]; with one it is not the mean of the flow's output z_L.
ACTIVE_THRESHOLD = 0.01
CHUNK_SIZE = 2048  # latents per decoder call: evaluate.py's default --chunk_size, and training's test phase's


@torch.inference_mode()
def evaluate_loader(model, loader, num_samples=100, chunk_size=CHUNK_SIZE, seed=0, progress=False):
    """Both estimates for every image of a loader, in eval mode, without gradients.

    Args:
        model: a VAE; loader: iterable of (images long [B, 1, 28, 28] in 0..L-1, labels long [B]).
        num_samples: K, importance samples per image; chunk_size: latents per decoder call (memory bound).
        seed: seed of the draws, on a fork of the RNG state (the caller's random stream is untouched);
            None: use and advance the global random state.
        progress: tqdm bar over batches (None: only on a terminal).
    Returns:
        dict of per-image CPU tensors, nats: "nelbo", "rec", "kl", "iw" (log p(x) estimates) [N] float64,
        "labels" [N], "mean" [N, D] (means of the base Gaussian), "kl_per_dim" [N, D] (None with a flow);
        and "dims" (pixels per image, for bpd), "num_samples".
    """
    device = model.device
    keys = ("nelbo", "rec", "kl", "mean", "kl_per_dim")
    parts = {key: [] for key in keys + ("iw", "labels")}
    dims = None
    with eval_mode(model), forked_rng(device, seed=seed, enabled=seed is not None):
        no_bar = None if progress is None else not progress  # tqdm: None = only on a terminal
        for imgs, labels in tqdm(loader, desc=f"evaluating (K={num_samples})", disable=no_bar, leave=False):
            imgs = imgs.to(device, non_blocking=True)  # [B, 1, 28, 28]
            dims = math.prod(imgs.shape[1:])
            elbo = elbo_per_image(model, imgs)
            parts["iw"].append(iw_log_likelihood(model, imgs, num_samples, chunk_size, elbo["posterior"]).cpu())
            for key in keys:
                parts[key].append(None if elbo[key] is None else elbo[key].cpu())
            parts["labels"].append(labels.cpu())
    if dims is None:
        raise UserError("the split has no images")
    result = {key: None if values[0] is None else torch.cat(values) for key, values in parts.items()}
    result["mean"] = result["mean"].double()
    result.update(dims=dims, num_samples=num_samples)
    return result


def _bpd(nats, dims):
    """A float in nats per image -> bits per dimension, via utils.elbo_to_bpd (None stays None)."""
    return None if nats is None else float(elbo_to_bpd(torch.tensor(nats, dtype=torch.float64), (1, dims)))


def summarize(per_image, active_threshold=ACTIVE_THRESHOLD, classes=CLASSES):
    """Dataset figures from `evaluate_loader`'s per-image values; part1/README.md describes every field.

    Returns a flat dict: num_images, iw_samples; bpd, bpd_se, nelbo_nats, nelbo_nats_se, rec_nats,
    kl_nats (the negative ELBO, one z per image); iw_bpd, iw_bpd_se, iw_nats, iw_nats_se (the negative
    IW bound); gap_bpd, gap_bpd_se (bpd - iw_bpd, paired); active_units (of the base Gaussian's mean mu_0(x),
    see ACTIVE_THRESHOLD); and the dicts "per_class"
    (count, bpd, bpd_se, iw_bpd, iw_bpd_se per class name) and "latents".
    """
    dims, n = per_image["dims"], len(per_image["nelbo"])
    summary = {"num_images": n, "iw_samples": per_image["num_samples"]}
    for prefix, loss in (("nelbo", per_image["nelbo"]), ("iw", -per_image["iw"])):
        nats, nats_se = mean_and_se(loss)
        bpd_name = "bpd" if prefix == "nelbo" else "iw_bpd"
        summary.update({bpd_name: _bpd(nats, dims), f"{bpd_name}_se": _bpd(nats_se, dims),
                        f"{prefix}_nats": nats, f"{prefix}_nats_se": nats_se})
    summary["rec_nats"] = per_image["rec"].mean().item()
    summary["kl_nats"] = per_image["kl"].mean().item()
    gap, gap_se = mean_and_se(per_image["nelbo"] + per_image["iw"])  # ELBO's loss - IW's loss, >= 0 in expectation
    summary.update(gap_bpd=_bpd(gap, dims), gap_bpd_se=_bpd(gap_se, dims))

    per_class = {}
    for label, name in enumerate(classes):
        chosen = per_image["labels"] == label  # [N] bool
        entry = {"count": int(chosen.sum())}
        for key, loss in (("bpd", per_image["nelbo"]), ("iw_bpd", -per_image["iw"])):
            nats, nats_se = mean_and_se(loss[chosen]) if entry["count"] else (None, None)
            entry[key], entry[f"{key}_se"] = _bpd(nats, dims), _bpd(nats_se, dims)
        per_class[name] = entry
    summary["per_class"] = per_class

    mean_var = per_image["mean"].var(dim=0) if n > 1 else torch.zeros(per_image["mean"].shape[1])  # [D]
    active = mean_var > active_threshold  # [D] bool: Var_x(mu_0,d(x)) > threshold (with a flow: of z_0's mean)
    summary["active_units"] = int(active.sum())
    kl_per_dim = per_image["kl_per_dim"]
    summary["latents"] = {
        "kl_per_dim": None if kl_per_dim is None else kl_per_dim.mean(dim=0).tolist(),
        "posterior_mean_var": mean_var.tolist(), "active_dims": active.nonzero().flatten().tolist(),
        "active_threshold": active_threshold, "z_dim": len(mean_var),
    }
    return summary


def evaluation_record(per_image, *, written_by, checkpoint, epoch, dataset, bits, split, data_dir, seed, batch_size,
                      chunk_size, device, wall_time_s, pictures=None):
    """The eval_<split>.json record (runs/schema.py's EVAL_FIELDS; part1/README.md), built here for both of its writers,
    train_torch.py's test phase and evaluate.py, so that both write the same fields (every one is a required keyword):
    who wrote it (`written_by`), what it evaluated (checkpoint, epoch, dataset, bits, split, data_dir), what its draws
    of z depend on (seed, batch_size, chunk_size, device), wall_time_s and pictures (None when none were drawn); then
    the summary (per_class named by the dataset's classes) and per_image_iw_bpd, every image's negative IW bound in
    bpd (in loader order: the study pairs images across runs by position)."""
    about = {"written_by": written_by, "checkpoint": checkpoint, "epoch": epoch, "dataset": dataset, "bits": bits,
             "split": split, "data_dir": data_dir, "seed": seed, "batch_size": batch_size, "chunk_size": chunk_size,
             "device": device, "wall_time_s": wall_time_s, "pictures": pictures}
    per_image_bpd = [_bpd(v, per_image["dims"]) for v in (-per_image["iw"]).tolist()]
    return {**about, **summarize(per_image, classes=DATASETS[dataset].classes), "per_image_iw_bpd": per_image_bpd}


def _figure(value, digits=4):
    """A number of a record as text (a damaged record's odd value as its repr, so a line never fails)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{value:.{digits}f}" if number else repr(value)


def evaluation_line(record):
    """The line both writers print for an eval_<split>.json record: what was evaluated, by whom, with which draws
    (a second evaluation of the same checkpoint differs by these: seed, batch and chunk size), and both estimates."""
    r = record
    return (f"{r['split']} split, {r['num_images']} images, {r['checkpoint']} (epoch {r['epoch']}), {r['dataset']} "
            f"{r['bits']}-bit, by {r['written_by']}, seed {r['seed']}, batch {r['batch_size']}, chunk "
            f"{r['chunk_size']} | ELBO (one z per image) {_figure(r['bpd'])} +- {_figure(r['bpd_se'] or 0)} bpd "
            f"({_figure(r['nelbo_nats'], 2)} nats) | IW K={r['iw_samples']} {_figure(r['iw_bpd'])} +- "
            f"{_figure(r['iw_bpd_se'] or 0)} bpd ({_figure(r['iw_nats'], 2)} nats) | gap {_figure(r['gap_bpd'])} "
            f"bpd | active units {r['active_units']}/{r['latents']['z_dim']} | {_figure(r['wall_time_s'], 0)} s")


def replaced_line(earlier):
    """What an earlier eval_<split>.json held, in a few words: its headline as evaluation.write_evaluation keeps it
    (a damaged file's: {"damaged": why})."""
    e = earlier
    if "damaged" in e:
        return f"a damaged file ({e['damaged']})"
    who = f"{e['written_by']}'s evaluation" if "written_by" in e else "an evaluation by an older version"
    return (f"{who} of {e.get('checkpoint')} (epoch "
            f"{e.get('epoch')}), seed {e.get('seed')}, K={e.get('iw_samples')}: ELBO {_figure(e.get('bpd'))}, IW "
            f"{_figure(e.get('iw_bpd'))} bpd")
