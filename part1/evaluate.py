"""Evaluate a trained VAE checkpoint: ELBO and importance-weighted bpd, per class, latents, pictures.

    python evaluate.py RUN_DIR            # RUN_DIR/checkpoints/best.pt, test split, K = 100
    python evaluate.py RUN_DIR/checkpoints/last.pt --split val --iw_samples 1000

Two estimates of the test log-likelihood, in nats per image and in bits per dimension (dgmkit/vae/estimates.py):
the ELBO with one z ~ q(z|x), exactly as VAE.forward, and the importance-weighted bound of Burda et
al. (2016), which is at least as tight and tends to log p(x) as K grows. Results go to eval_<split>.json
in the run folder, pictures to reconstructions_<split>.png and interpolations_<split>.png there, and
everything to the run's TensorBoard (the model and the pictures: dgmkit/vae/evaluation.py).
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line
    from dgmkit.cli import startup
    startup.guard_startup()

import os
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from dgmkit.cli.args import ArgumentParser, int_at_least, resolve_path, seed_type
from dgmkit.cli.runner import run_cli
from dgmkit.data.datasets import BITS, DATASETS, load_data
from dgmkit.data.folders import resolve_data_dir
from dgmkit.engine.hardware import resolve_device
from dgmkit.errors import Interrupted, Terminated, UserError, signal_name_and_status
from dgmkit.places import REPO_ROOT
from dgmkit.runs.atomic_io import check_destination
from dgmkit.runs.checkpoints import CheckpointError
from dgmkit.runs.folder import PICTURES, RunDir
from dgmkit.runs.paths import record
from dgmkit.vae.estimates import evaluate_loader, evaluation_record
from dgmkit.vae.evaluation import load_model, save_pictures

PROG = "evaluate.py"


def resolve_checkpoint(path):
    """RUN_DIR -> (RUN_DIR/checkpoints/best.pt, RunDir); a .pt file -> (it, the RunDir of its run folder)."""
    path = Path(path)
    if path.is_dir():
        return RunDir(path).checkpoint("best"), RunDir(path)
    return path, RunDir.of_checkpoint(path)


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
