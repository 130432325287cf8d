"""Evaluate a trained VAE checkpoint: ELBO and importance-weighted bpd, per class, latents, pictures.

    python evaluate.py RUN_DIR            # RUN_DIR/checkpoints/best.pt, test split, K = 100
    python evaluate.py RUN_DIR/checkpoints/last.pt --split val --iw_samples 1000

Two estimates of the test log-likelihood, both in nats per image and in bits per dimension:
  * the ELBO, log p(x|z) - KL(q(z|x) || p(z)) with one z ~ q(z|x), exactly as VAE.forward;
  * the importance-weighted (IW) bound of Burda et al. (2016),
        log p(x) >= E[ log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) ],  z_k ~ q(z|x),
    which is at least the ELBO and tends to log p(x) as K grows.
Results go to eval_<split>.json in the run folder, pictures to reconstructions_<split>.png and
interpolations_<split>.png there, and everything to the run's TensorBoard.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from checkpoints import CheckpointError, load_checkpoint, write_json
from fmnist import CLASSES, DataError, fmnist
from train_torch import VAE, UserError, int_at_least, resolve_device
from utils import KLD, decoder_mean_image, elbo_to_bpd, sample_reparameterize

PROG = "evaluate.py"
PART1_DIR = Path(__file__).resolve().parent
REPO_ROOT = PART1_DIR.parent
LOG_2PI = math.log(2 * math.pi)
ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016: unit d is active when Cov_x(E_q[z_d]) > 0.01


# ---- log-densities (nats), written out by hand ---------------------------------------------------

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
        logits: [N, 16, 28, 28] decoder logits; imgs: [N, 1, 28, 28] long levels 0..15.
    Returns:
        [N] float64 log-likelihoods (per-pixel terms in the logits' precision, summed in float64).
    """
    ce = F.cross_entropy(logits, imgs.squeeze(1), reduction="none")  # [N, 28, 28]
    return -ce.double().flatten(1).sum(dim=1)  # [N]


# ---- the two estimates for one batch --------------------------------------------------------------

def elbo_per_image(model, imgs):
    """The ELBO of every image with one reparameterized sample, the same computation as VAE.forward.

    With the same random state, -(rec + kl).mean() equals L_rec + L_reg of model(imgs).
    Args:
        imgs: [B, 1, 28, 28] long levels 0..15.
    Returns:
        dict of float64 [B] tensors in nats per image: "elbo" = -(rec + kl), "rec" = -log p(x|z),
        "kl" = KL(q(z|x) || N(0, I)); plus "mean", "log_std" [B, D] (the encoder's outputs) and
        "kl_per_dim" [B, D] (nats).
    """
    mean, log_std = model.encoder(imgs)  # [B, D] each
    z = sample_reparameterize(mean, torch.exp(log_std))  # [B, D]
    rec = -log_px_given_z(model.decoder(z), imgs)  # [B]
    kl_per_dim = KLD(mean.unsqueeze(-1), log_std.unsqueeze(-1)).double()  # [B, D]: KLD over 1-dim "vectors"
    kl = kl_per_dim.sum(dim=-1)  # [B]
    return {"elbo": -(rec + kl), "rec": rec, "kl": kl, "mean": mean, "log_std": log_std,
            "kl_per_dim": kl_per_dim}


def iw_log_likelihood(model, imgs, num_samples, chunk_size=2048, mean=None, log_std=None):
    """Importance-weighted estimate of log p(x) in nats per image, with K = num_samples draws from q(z|x).

        log p(x) ~= log (1/K) sum_k exp(log w_k),  log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x).

    The K samples are drawn in chunks of k = max(1, chunk_size // B) per image, so one decoder
    call sees at most max(B, chunk_size) latents whatever K is; chunks are combined with a
    running log-sum-exp in float64. Uses torch's global random state.
    Args:
        imgs: [B, 1, 28, 28] long levels 0..15.
        num_samples: K >= 1.
        chunk_size: latents per decoder call (bounds memory).
        mean, log_std: [B, D] encoder outputs, when already computed.
    Returns:
        [B] float64 estimates of log p(x) in nats (a lower bound in expectation, tight as K -> inf).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if mean is None:
        mean, log_std = model.encoder(imgs)  # [B, D] each
    B, D = mean.shape
    per_chunk = max(1, chunk_size // B)
    target = imgs.unsqueeze(1)  # [B, 1, 1, 28, 28]
    log_sum = torch.full((B,), -math.inf, dtype=torch.float64, device=mean.device)  # [B]
    for start in range(0, num_samples, per_chunk):
        k = min(per_chunk, num_samples - start)
        eps = torch.randn(B, k, D, device=mean.device, dtype=mean.dtype)  # [B, k, D]
        z = mean.unsqueeze(1) + torch.exp(log_std).unsqueeze(1) * eps  # [B, k, D]
        logits = model.decoder(z.reshape(B * k, D))  # [B*k, 16, 28, 28]
        chunk_imgs = target.expand(B, k, *imgs.shape[1:]).reshape(B * k, *imgs.shape[1:])  # [B*k, 1, 28, 28]
        log_px = log_px_given_z(logits, chunk_imgs).view(B, k)  # [B, k]
        log_pz = log_standard_normal(z.double())  # [B, k]
        log_qz = log_normal_from_eps(eps.double(), log_std.double().unsqueeze(1))  # [B, k]
        log_w = log_px + log_pz - log_qz  # [B, k]
        log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w, dim=1))  # [B]
    return log_sum - math.log(num_samples)  # [B]


# ---- a whole split --------------------------------------------------------------------------------

@torch.inference_mode()
def evaluate_loader(model, loader, num_samples=100, chunk_size=2048, seed=0, progress=False):
    """Both estimates for every image of a loader, in eval mode, without gradients.

    Args:
        model: a VAE (encoder, decoder).
        loader: iterable of (images long [B, 1, 28, 28] in 0..15, labels long [B]).
        num_samples: K, importance samples per image.
        chunk_size: latents per decoder call in the IW estimate (memory bound).
        seed: seed of the random draws (run on a fork of the RNG state, so the caller's random
            stream is untouched); None: use and advance the global random state.
        progress: tqdm bar over batches (None: only on a terminal).
    Returns:
        dict of per-image CPU tensors, nats: "elbo", "rec", "kl", "iw" (log p(x) estimates) [N]
        float64, "labels" [N], "mean" [N, D] (posterior means), "kl_per_dim" [N, D]; and
        "dims" (pixels per image, for bpd), "num_samples".
    """
    device = model.device
    was_training = model.training
    model.eval()
    parts = {key: [] for key in ("elbo", "rec", "kl", "iw", "labels", "mean", "kl_per_dim")}
    dims = None
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        no_bar = None if progress is None else not progress  # tqdm: None = only on a terminal
        batches = tqdm(loader, desc=f"evaluating (K={num_samples})", disable=no_bar, dynamic_ncols=True, leave=False)
        for imgs, labels in batches:
            imgs = imgs.to(device, non_blocking=True)  # [B, 1, 28, 28]
            dims = math.prod(imgs.shape[1:])
            elbo = elbo_per_image(model, imgs)
            iw = iw_log_likelihood(model, imgs, num_samples, chunk_size, elbo["mean"], elbo["log_std"])  # [B]
            for key in ("elbo", "rec", "kl", "mean", "kl_per_dim"):
                parts[key].append(elbo[key].cpu())
            parts["iw"].append(iw.cpu())
            parts["labels"].append(labels.cpu())
    model.train(was_training)
    if dims is None:
        raise UserError("the split has no images")
    result = {key: torch.cat(values) for key, values in parts.items()}
    result["mean"] = result["mean"].double()
    result.update(dims=dims, num_samples=num_samples)
    return result


def mean_and_se(values):
    """Mean of a 1-D tensor and its standard error std / sqrt(N) (sample std, N - 1); SE is None for N < 2."""
    n = len(values)
    se = (values.std() / math.sqrt(n)).item() if n > 1 else None
    return values.mean().item(), se


def _bpd(nats, dims):
    """A float in nats per image -> bits per dimension, via utils.elbo_to_bpd (None stays None)."""
    return None if nats is None else float(elbo_to_bpd(torch.tensor(nats, dtype=torch.float64), (1, dims)))


def summarize(per_image, active_threshold=ACTIVE_THRESHOLD):
    """Dataset figures from `evaluate_loader`'s per-image values.

    Sign convention: "nats" fields are negative log-likelihood bounds, -ELBO or -log p_K(x), in
    nats per image (lower is better), and "bpd" = nats * log2(e) / 784. "_se" is the standard
    error of the mean over images (the spread between images, which also holds the Monte Carlo
    noise of z); it does not measure the bias of a bound.
    Returns:
        dict with "num_images", "num_samples", "elbo", "iw", "gap" (ELBO bpd - IW bpd, paired
        SE), "per_class" and "latents" (KL per dimension, variance of the posterior mean per
        dimension, active units); see the README for every field.
    """
    dims, n = per_image["dims"], len(per_image["elbo"])
    summary = {"num_images": n, "num_samples": per_image["num_samples"]}
    for name, nll in (("elbo", -per_image["elbo"]), ("iw", -per_image["iw"])):
        nats, nats_se = mean_and_se(nll)
        summary[name] = {"bpd": _bpd(nats, dims), "bpd_se": _bpd(nats_se, dims), "nats": nats, "nats_se": nats_se}
    summary["elbo"]["rec_nats"] = per_image["rec"].mean().item()
    summary["elbo"]["kl_nats"] = per_image["kl"].mean().item()
    gap, gap_se = mean_and_se(per_image["iw"] - per_image["elbo"])  # >= 0 in expectation
    summary["gap"] = {"bpd": _bpd(gap, dims), "bpd_se": _bpd(gap_se, dims), "nats": gap, "nats_se": gap_se}

    per_class = {}
    for label, name in enumerate(CLASSES):
        chosen = per_image["labels"] == label  # [N] bool
        entry = {"count": int(chosen.sum())}
        for est in ("elbo", "iw"):
            nats, nats_se = mean_and_se(-per_image[est][chosen]) if entry["count"] else (None, None)
            entry[f"{est}_bpd"], entry[f"{est}_bpd_se"] = _bpd(nats, dims), _bpd(nats_se, dims)
        per_class[name] = entry
    summary["per_class"] = per_class

    kl_per_dim = per_image["kl_per_dim"].mean(dim=0)  # [D], nats
    mean_var = per_image["mean"].var(dim=0) if n > 1 else torch.zeros_like(kl_per_dim)  # [D], Cov_x(E_q[z_d])
    active = mean_var > active_threshold  # [D] bool
    summary["latents"] = {
        "kl_per_dim": kl_per_dim.tolist(), "posterior_mean_var": mean_var.tolist(),
        "active_units": int(active.sum()), "active_dims": active.nonzero().flatten().tolist(),
        "active_threshold": active_threshold, "z_dim": len(kl_per_dim),
    }
    return summary


def importance_weighted_bpd(model, loader, num_samples=100, chunk_size=2048, seed=0, progress=False):
    """ELBO and importance-weighted bound of a split in bits per dimension, for train_torch.py.

    Args:
        model: a VAE; it is put in eval mode and its mode restored afterwards.
        loader: iterable of (images long [B, 1, 28, 28] in 0..15, labels [B]).
        num_samples: K, importance samples per image.
        chunk_size: latents per decoder call (memory bound; any K works).
        seed: seed of the draws, on a fork of the RNG state (the caller's stream is untouched).
        progress: tqdm bar over batches (None: only on a terminal).
    Returns:
        flat dict of floats: "iw_bpd", "iw_bpd_se" (bits per dimension), "iw_nats", "iw_nats_se"
        (-log p_K(x), nats per image), the same four with "elbo_" (the negative ELBO, one sample),
        and "num_images", "num_samples" (ints). "_se" is the standard error over images.
    """
    summary = summarize(evaluate_loader(model, loader, num_samples, chunk_size, seed, progress))
    flat = {f"{est}_{key}": summary[est][key] for est in ("iw", "elbo") for key in ("bpd", "bpd_se", "nats", "nats_se")}
    flat.update(num_images=summary["num_images"], num_samples=summary["num_samples"])
    return flat


# ---- pictures -------------------------------------------------------------------------------------

@torch.inference_mode()
def reconstruction_grid(model, imgs):
    """Originals (top row) over their reconstructions (bottom row): decoder mean at z = posterior mean.

    Args:
        imgs: [N, 1, 28, 28] long levels 0..15.
    Returns:
        [3, H, W] float grid in [0, 1] (CPU), N columns, 2 rows.
    """
    mean, _ = model.encoder(imgs)  # [N, D]
    recon = decoder_mean_image(model.decoder(mean))  # [N, 1, 28, 28] in [0, 1]
    both = torch.cat([imgs.float() / 15, recon]).cpu()  # [2N, 1, 28, 28]
    return torchvision.utils.make_grid(both, nrow=len(imgs)).clamp(0, 1)


@torch.inference_mode()
def interpolation_grid(model, first, second, steps=10):
    """Latent interpolations: one row per pair, [x_a, `steps` decoder means, x_b].

    z_t = (1 - t) mu_a + t mu_b for t = 0, 1/(steps-1), ..., 1, mu the posterior means.
    Args:
        first, second: [P, 1, 28, 28] long levels 0..15, the two ends of P pairs.
    Returns:
        [3, H, W] float grid in [0, 1] (CPU), P rows of steps + 2 images.
    """
    mu_a, _ = model.encoder(first)  # [P, D]
    mu_b, _ = model.encoder(second)  # [P, D]
    t = torch.linspace(0, 1, steps, device=mu_a.device).view(1, steps, 1)  # [1, S, 1]
    z = (1 - t) * mu_a.unsqueeze(1) + t * mu_b.unsqueeze(1)  # [P, S, D]
    decoded = decoder_mean_image(model.decoder(z.flatten(0, 1)))  # [P*S, 1, 28, 28]
    decoded = decoded.view(len(first), steps, *decoded.shape[1:])  # [P, S, 1, 28, 28]
    rows = torch.cat([first.float().unsqueeze(1) / 15, decoded, second.float().unsqueeze(1) / 15], dim=1)  # [P, S+2, 1, 28, 28]
    return torchvision.utils.make_grid(rows.flatten(0, 1).cpu(), nrow=steps + 2).clamp(0, 1)


def first_images(loader, count):
    """The first `count` images of a loader (fewer if it is smaller): [n, 1, 28, 28] long."""
    taken, total = [], 0
    for imgs, _ in loader:
        taken.append(imgs)
        total += len(imgs)
        if total >= count:
            break
    return torch.cat(taken)[:count]


def save_pictures(model, loader, run_dir, split, writer=None, step=0, count=8, steps=10):
    """Write reconstructions_<split>.png and interpolations_<split>.png into run_dir (and TensorBoard).

    Uses the first 2 * count images of the split: images 0..count-1 for the reconstructions,
    pairs (i, count + i) for the interpolations (fewer on a smaller split). Returns
    {"reconstructions": file name, "interpolations": file name}.
    """
    device = model.device
    was_training = model.training
    model.eval()
    imgs = first_images(loader, 2 * count).to(device)  # [<=2*count, 1, 28, 28]
    names = {}
    recon = reconstruction_grid(model, imgs[:count])
    names["reconstructions"] = f"reconstructions_{split}.png"
    torchvision.utils.save_image(recon, run_dir / names["reconstructions"])
    pairs = min(count, len(imgs) // 2)
    if pairs > 0:
        interp = interpolation_grid(model, imgs[:pairs], imgs[pairs:2 * pairs], steps)
        names["interpolations"] = f"interpolations_{split}.png"
        torchvision.utils.save_image(interp, run_dir / names["interpolations"])
    if writer is not None:
        writer.add_image(f"eval_{split}/reconstructions", recon, step)
        if pairs > 0:
            writer.add_image(f"eval_{split}/interpolations", interp, step)
    model.train(was_training)
    return names


# ---- checkpoint, data, CLI ------------------------------------------------------------------------

def resolve_checkpoint(path):
    """RUN_DIR -> (RUN_DIR/checkpoints/best.pt, RUN_DIR); a .pt file -> (it, its run folder)."""
    path = Path(path)
    if path.is_dir():
        return path / "checkpoints" / "best.pt", path
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path, run_dir


def load_model(path, device):
    """Read a train_torch.py checkpoint safely (weights_only) and build its VAE on `device`, in eval mode.

    Returns:
        (model, checkpoint dict). Raises CheckpointError with a one-line message on any problem.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (give a run folder holding checkpoints/best.pt, "
                              "or a .pt file written by train_torch.py)")
    ckpt = load_checkpoint(path)
    try:
        args = ckpt["args"]
        model = VAE(num_filters=int(args["num_filters"]), z_dim=int(args["z_dim"]), lr=float(args.get("lr", 1e-3)))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"checkpoint {path} does not match the VAE of train_torch.py: {first_line}") from None
    return model.to(device).eval(), ckpt


def default_data_dir(ckpt_args):
    """The checkpoint's data_dir; a relative one is looked up from here, the repo root, then part1/."""
    data_dir = Path(ckpt_args.get("data_dir", REPO_ROOT / "data"))
    if data_dir.is_absolute():
        return data_dir
    for base in (Path.cwd(), REPO_ROOT, PART1_DIR):
        if (base / data_dir / "FashionMNIST" / "raw").is_dir():
            return (base / data_dir).resolve()
    return data_dir


def _json_safe(obj):
    """NaN/inf -> None, recursively, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def main(args):
    """Evaluate one checkpoint on one split; write eval_<split>.json, pictures and TensorBoard entries.

    Returns:
        the dict written to eval_<split>.json.
    """
    start = time.time()
    device = resolve_device(args.device)
    ckpt_path, run_dir = resolve_checkpoint(args.checkpoint)
    model, ckpt = load_model(ckpt_path, device)
    data_dir = args.data_dir if args.data_dir is not None else default_data_dir(ckpt["args"])
    loaders = fmnist(data_dir, args.batch_size, 0, False)  # (root, batch_size, num_workers, download)
    loader = {"val": loaders[1], "test": loaders[2]}[args.split]

    per_image = evaluate_loader(model, loader, args.iw_samples, args.chunk_size, args.seed, progress=None)
    summary = summarize(per_image)
    step = int(ckpt.get("epoch", 0) or 0)
    try:
        writer = SummaryWriter(run_dir)
        pictures = save_pictures(model, loader, run_dir, args.split, writer, step)
        for est in ("elbo", "iw"):
            writer.add_scalar(f"eval_{args.split}/{est}_bpd", summary[est]["bpd"], step)
        writer.add_scalar(f"eval_{args.split}/active_units", summary["latents"]["active_units"], step)
        writer.close()
        result = {"checkpoint": str(ckpt_path), "epoch": ckpt.get("epoch"), "split": args.split,
                  "data_dir": str(data_dir), "seed": args.seed, "device": str(device), **summary,
                  "pictures": pictures, "wall_time_s": time.time() - start}
        write_json(run_dir / f"eval_{args.split}.json", _json_safe(result))
    except OSError as error:
        raise UserError(f"cannot write the results into {run_dir}: {error.strerror or error}") from None

    e, w, g = summary["elbo"], summary["iw"], summary["gap"]
    print(f"{args.split}: {summary['num_images']} images | ELBO {e['bpd']:.4f} +- {e['bpd_se'] or 0:.4f} bpd "
          f"({e['nats']:.2f} nats) | IW K={args.iw_samples} {w['bpd']:.4f} +- {w['bpd_se'] or 0:.4f} bpd "
          f"({w['nats']:.2f} nats) | gap {g['bpd']:.4f} bpd | active units "
          f"{summary['latents']['active_units']}/{summary['latents']['z_dim']} | {result['wall_time_s']:.0f} s")
    print(f"wrote {run_dir / f'eval_{args.split}.json'}")
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", type=Path, metavar="RUN_DIR_OR_CHECKPOINT",
                        help="a run folder (its checkpoints/best.pt is used) or a checkpoint .pt file")
    parser.add_argument("--data_dir", type=Path, default=None,
                        help="folder holding FashionMNIST/raw/; None: the checkpoint's data_dir (a relative one is "
                             "looked up from the current folder, the repo root, then part1/)")
    parser.add_argument("--split", choices=["test", "val"], default="test",
                        help="split to evaluate (val: the seeded 10%% of the training set held out in training)")
    parser.add_argument("--iw_samples", type=int_at_least(1), default=100,
                        help="K, importance samples per image for the importance-weighted bound")
    parser.add_argument("--batch_size", type=int_at_least(1), default=128, help="images per batch")
    parser.add_argument("--chunk_size", type=int_at_least(1), default=2048,
                        help="latents per decoder call (bounds memory; results do not depend on it beyond "
                             "the random draws)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws of z")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to evaluate; auto = CUDA when available")
    return parser.parse_args(argv)


def cli(argv=None):
    args = parse_args(argv)
    try:
        main(args)
    except (DataError, UserError, CheckpointError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
