"""Evaluate a trained VAE checkpoint: ELBO and importance-weighted bpd, per class, latents, pictures.

    python evaluate.py RUN_DIR            # RUN_DIR/checkpoints/best.pt, test split, K = 100
    python evaluate.py RUN_DIR/checkpoints/last.pt --split val --iw_samples 1000

Two estimates of the test log-likelihood, in nats per image and in bits per dimension (estimates.py):
the ELBO with one z ~ q(z|x), exactly as VAE.forward, and the importance-weighted bound of Burda et
al. (2016), which is at least as tight and tends to log p(x) as K grows. Results go to eval_<split>.json
in the run folder, pictures to reconstructions_<split>.png and interpolations_<split>.png there, and
everything to the run's TensorBoard.
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line 
    from dgmkit.cli import startup
    startup.guard_startup()

import os
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.tensorboard import SummaryWriter

from dgmkit.cli.args import ArgumentParser, int_at_least, resolve_path, seed_type
from dgmkit.cli.runner import run_cli
from dgmkit.contexts import eval_mode
from dgmkit.data.datasets import BITS, DATASETS, load_data
from dgmkit.engine.hardware import resolve_device
from dgmkit.errors import Interrupted, Terminated, UserError, first_line, signal_name_and_status
from dgmkit.runs.atomic_io import check_destination
from dgmkit.runs.checkpoints import CheckpointError, load_checkpoint
from dgmkit.runs.folder import PICTURES, RunDir
from dgmkit.runs.paths import record, resolve_data_dir
from dgmkit.vae.config import REPO_ROOT, TrainConfig
from dgmkit.vae.estimates import evaluate_loader, evaluation_record
from dgmkit.vae.model import VAE
from utils import decoder_mean_image

PROG = "evaluate.py"


@torch.inference_mode()
def reconstruction_grid(model, imgs):
    """Originals (top row) over their reconstructions (bottom row): decoder mean at z = posterior mean.

    Args:
        imgs: [N, 1, 28, 28] long levels 0..L-1.
    Returns:
        [3, H, W] float grid in [0, 1] (CPU), N columns, 2 rows.
    """
    mean, _ = model.encoder(imgs)  # [N, D]
    recon = decoder_mean_image(model.decoder(mean))  # [N, 1, 28, 28] in [0, 1]
    both = torch.cat([imgs.float() / (model.levels - 1), recon]).cpu()  # [2N, 1, 28, 28]
    return torchvision.utils.make_grid(both, nrow=len(imgs)).clamp(0, 1)


@torch.inference_mode()
def interpolation_grid(model, first, second, steps=10):
    """Latent interpolations: one row per pair, [x_a, `steps` decoder means, x_b].

    z_t = (1 - t) mu_a + t mu_b for t = 0, 1/(steps-1), ..., 1, mu the posterior means.
    Args:
        first, second: [P, 1, 28, 28] long levels 0..L-1, the two ends of P pairs.
    Returns:
        [3, H, W] float grid in [0, 1] (CPU), P rows of steps + 2 images.
    """
    mu_a, _ = model.encoder(first)  # [P, D]
    mu_b, _ = model.encoder(second)  # [P, D]
    t = torch.linspace(0, 1, steps, device=mu_a.device).view(1, steps, 1)  # [1, S, 1]
    z = (1 - t) * mu_a.unsqueeze(1) + t * mu_b.unsqueeze(1)  # [P, S, D]
    decoded = decoder_mean_image(model.decoder(z.flatten(0, 1)))  # [P*S, 1, 28, 28]
    decoded = decoded.view(len(first), steps, *decoded.shape[1:])  # [P, S, 1, 28, 28]
    top = model.levels - 1
    rows = torch.cat([first.float().unsqueeze(1) / top, decoded, second.float().unsqueeze(1) / top], dim=1)  # [P, S+2, 1, 28, 28]
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


def save_pictures(model, loader, run_dir, split, writer=None, step=0, count=8, steps=10, written=None):
    """Write reconstructions_<split>.png and interpolations_<split>.png into run_dir (and TensorBoard).

    Uses the first 2 * count images of the split: images 0..count-1 for the reconstructions,
    pairs (i, count + i) for the interpolations (fewer on a smaller split). Returns
    {"reconstructions": file name, "interpolations": file name}; each name is also appended to `written`
    (a list) as soon as its file is complete.
    """
    with eval_mode(model):
        imgs = first_images(loader, 2 * count).to(model.device)  # [<=2*count, 1, 28, 28]
        grids = {"reconstructions": reconstruction_grid(model, imgs[:count])}
        pairs = min(count, len(imgs) // 2)
        if pairs > 0:
            grids["interpolations"] = interpolation_grid(model, imgs[:pairs], imgs[pairs:2 * pairs], steps)
    names = {}
    for kind, grid in grids.items():
        run_dir.save_picture(kind, split, grid)
        names[kind] = run_dir.picture_path(kind, split).name
        if written is not None:
            written.append(names[kind])
        if writer is not None:
            writer.add_image(f"eval_{split}/{kind}", grid, step)
    return names


def resolve_checkpoint(path):
    """RUN_DIR -> (RUN_DIR/checkpoints/best.pt, RunDir); a .pt file -> (it, the RunDir of its run folder)."""
    path = Path(path)
    if path.is_dir():
        return RunDir(path).checkpoint("best"), RunDir(path)
    return path, RunDir.of_checkpoint(path)


def load_model(path, device):
    """Read a train_torch.py checkpoint safely (weights_only) and rebuild its VAE (its family: z_dim,
    num_filters, flow, flow_length) on `device`, in eval mode. Returns (model, checkpoint dict)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (give a run folder holding checkpoints/best.pt, "
                              "or a .pt file written by train_torch.py)")
    ckpt = load_checkpoint(path)
    TrainConfig.check_saved(ckpt["args"], f"{path}, args")
    args = ckpt["args"]
    try:
        model = VAE(int(args["num_filters"]), int(args["z_dim"]), float(args.get("lr", 1e-3)),
                    args.get("flow", "none"), int(args.get("flow_length", 0)), 2 ** int(args.get("bits", 4)))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path} does not match the VAE of train_torch.py: "
                              f"{first_line(error)}") from None
    return model.to(device).eval(), ckpt


def main(args):
    """Evaluate one checkpoint on one split; write eval_<split>.json, pictures and TensorBoard entries.

    Returns:
        the dict written to eval_<split>.json.
    """
    start = time.time()
    device = resolve_device(args.device)
    ckpt_path, run_dir = resolve_checkpoint(resolve_path(args.checkpoint, "RUN_DIR_OR_CHECKPOINT"))
    model, ckpt = load_model(ckpt_path, device)
    data = {name: ckpt["args"].get(name, default) for name, default in (("dataset", "fashion_mnist"), ("bits", 4))}
    for name, value in data.items():  # the data the model was trained on; a flag may only confirm it
        if getattr(args, name) is not None and getattr(args, name) != value:
            raise CheckpointError(f"{ckpt_path} holds a model of --{name} {value}; it cannot be evaluated with "
                                  f"--{name} {getattr(args, name)} (drop the flag)")
    # The checkpoint's data_dir is relative to its run folder (absolute in older records): runs/paths.py.
    data_dir = args.data_dir if args.data_dir is not None else resolve_data_dir(
        ckpt["args"].get("data_dir", REPO_ROOT / "data"), run_dir, data["dataset"])
    loaders = load_data(data_dir, data["dataset"], data["bits"], args.batch_size, 0, download=False)
    loader = {"val": loaders[1], "test": loaders[2]}[args.split]
    if not os.access(run_dir.path, os.W_OK):
        raise UserError(f"cannot write the results into {run_dir}; make it writable")
    for path in (run_dir.eval_path(args.split), *(run_dir.picture_path(k, args.split) for k in PICTURES)):
        check_destination(path)  # before the long computation

    written = []  # what this evaluation has written so far, for the line an interrupt prints
    try:
        per_image = evaluate_loader(model, loader, args.iw_samples, args.chunk_size, args.seed, progress=None)
        step = int(ckpt.get("epoch", 0) or 0)
        # Files only after the long computation; eval_<split>.json last, so it is the old one or the whole new one.
        with run_dir.locked(), SummaryWriter(str(run_dir)) as writer:  # writable (checked above)
            written.append("a TensorBoard event file")
            pictures = save_pictures(model, loader, run_dir, args.split, writer, step, written=written)
            result = evaluation_record(per_image, DATASETS[data["dataset"]].classes,  # paths: runs/paths.py
                                       checkpoint=record(ckpt_path, run_dir), epoch=ckpt.get("epoch"),
                                       dataset=data["dataset"], bits=data["bits"], split=args.split,
                                       data_dir=record(data_dir, run_dir), seed=args.seed, device=str(device),
                                       pictures=pictures, wall_time_s=time.time() - start)
            run_dir.write_eval(args.split, result)
            for name in ("bpd", "iw_bpd", "active_units"):
                writer.add_scalar(f"eval_{args.split}/{name}", result[name], step)
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = signal_name_and_status(stop)
        target = run_dir.eval_path(args.split).name
        done = f"written before the stop: {', '.join(written)}" if written else "nothing was written"
        raise Interrupted(f"stopped by {name}; {target} was not (re)written; {done}", status) from None

    print(f"{args.split}: {result['num_images']} images | ELBO {result['bpd']:.4f} +- {result['bpd_se'] or 0:.4f} "
          f"bpd ({result['nelbo_nats']:.2f} nats) | IW K={args.iw_samples} {result['iw_bpd']:.4f} +- "
          f"{result['iw_bpd_se'] or 0:.4f} bpd ({result['iw_nats']:.2f} nats) | gap {result['gap_bpd']:.4f} bpd | "
          f"active units {result['active_units']}/{result['latents']['z_dim']} | {result['wall_time_s']:.0f} s")
    print(f"wrote {run_dir.eval_path(args.split)}")
    return result


def parse_args(argv=None):
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, metavar="RUN_DIR_OR_CHECKPOINT",
                        help="a run folder (its checkpoints/best.pt is used) or a checkpoint .pt file")
    parser.add_argument("--data_dir", type=Path, default=None,
                        help="folder holding FashionMNIST/raw/; None: the checkpoint's data_dir (relative to its "
                             "run folder; an older run's relative one is looked up from the current folder, the "
                             "repo root, then part1/)")
    parser.add_argument("--dataset", choices=list(DATASETS), default=None,
                        help="None: the checkpoint's; given, it must be the checkpoint's (a check, not a choice)")
    parser.add_argument("--bits", type=int_at_least(min(BITS), max(BITS)), default=None,
                        help="None: the checkpoint's; given, it must be the checkpoint's")
    parser.add_argument("--split", choices=["test", "val"], default="test",
                        help="split to evaluate (val: the seeded 10%% of the training set held out in training)")
    parser.add_argument("--iw_samples", type=int_at_least(1), default=100,
                        help="K, importance samples per image for the importance-weighted bound")
    parser.add_argument("--batch_size", type=int_at_least(1), default=128, help="images per batch")
    parser.add_argument("--chunk_size", type=int_at_least(1), default=2048,
                        help="latents per decoder call (bounds memory; results do not depend on it beyond "
                             "the random draws)")
    parser.add_argument("--seed", type=seed_type, default=0, help="seed of the random draws of z")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to evaluate; auto = CUDA when available")
    return parser.parse_args(argv)


def cli(argv=None):
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
