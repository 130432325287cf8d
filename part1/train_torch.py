"""Train a VAE on MNIST or FashionMNIST at B bits per pixel (default: the assignment's 4-bit FashionMNIST); report
the negative ELBO in bits per dimension.

    python train_torch.py --z_dim 20          # from part1/ or as part1/train_torch.py

Every run writes a fresh folder under --log_dir (its layout and file formats: run_folder.py and the
README): args.json, TensorBoard events, history.jsonl, sample grids, checkpoints/{best,last}.pt,
metrics.json and, for z_dim == 2, vae_manifold.png.
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line (entry.py)
    import entry
    entry.guard_startup()

import argparse
import contextlib
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import hardware
import run_folder
from atomic_io import check_destination, remove_stale_tmp
from checkpoints import checkpoint_state, load_checkpoint, restore_training_state, save_checkpoint, save_image
from cli_common import Interrupted, Terminated, UserError, resolve_device, resolve_path, run_cli, signal_name_and_status
from config import args_to_dict, parse_train_args
from estimates import evaluate_loader, evaluation_record
from dataset import DATASETS, load_data
from loops import NonFiniteLossError, build_model, sample_and_save, test_vae, train_vae
from model import VAE  # noqa: F401  (the assignment's API: train_torch.VAE)
from utils import visualize_manifold

PROG = "train_torch.py"
__all__ = ["VAE", "train_vae", "test_vae", "sample_and_save", "main", "parse_args", "cli"]


def parse_args(argv=None):
    return parse_train_args(argv, PROG)


def seed_everything(seed):
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_cuda(deterministic):
    """TF32 matmuls/convs, and cuDNN autotuning unless bitwise determinism is requested."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def speed_choices(args, device, num_train, saved):
    """What precision, compilation and memory format to use: the recorded ones on resume (so a resumed run
    computes what the uninterrupted one would), else hardware.choose's for this device and run length."""
    if saved is not None:
        choice = dict(saved)
        if "compile" in getattr(args, "given", ()) and args.compile != "auto":
            choice["compile"] = args.compile == "on"
        return choice
    steps = args.epochs * math.ceil(num_train / args.batch_size)
    return hardware.choose(device, args.precision, args.compile, args.channels_last, steps)


def log_epoch(writer, run_dir, epoch, stats, seconds):
    """One epoch's statistics ({split: {name: value}}) to TensorBoard (split/name) and history.jsonl (split_name);
    returns the history record."""
    record = {"epoch": epoch, "seconds": seconds}
    for split, values in stats.items():
        for name, value in values.items():
            writer.add_scalar(f"{split}/{name}", value, epoch)
            record[f"{split}_{name}"] = value
    writer.add_scalar("time/epoch_seconds", seconds, epoch)
    run_folder.append_history(run_dir, record)
    return record


def start_or_resume(args):
    """(settings namespace, checkpoint state or None, run folder or None) for a new or a resumed run."""
    if not args.resume:
        args.data_dir, args.log_dir = resolve_path(args.data_dir, "--data_dir"), resolve_path(args.log_dir, "--log_dir")
        return args, None
    merged, state = run_folder.resumed_args(args)
    given = args.given if hasattr(args, "given") else []
    args = argparse.Namespace(**merged, given=given)
    args.data_dir, args.log_dir = run_folder.find_data_dir(args.data_dir), Path(args.log_dir)
    if args.epochs < state["epoch"]:
        raise UserError(f"--epochs {args.epochs} is fewer than the {state['epoch']} epochs {args.resume} has "
                        f"trained; pass --epochs {state['epoch']} or more")
    return args, state


def main(args):
    """Train with Adam, validate every epoch, test the best-by-validation model.

    With args.resume set, continue that run folder from the epoch after its last checkpoint.
    Returns:
        the metrics dict also written to metrics.json.
    """
    session_start = time.time()
    args, state = start_or_resume(args)
    if state is not None and state["epoch"] >= args.epochs and run_folder.is_finished(args.resume):
        print(f"{args.resume} already finished its {state['epoch']} epochs and was tested; pass --epochs N "
              f"(N > {state['epoch']}) to train it further")
        return run_folder.read_metrics(args.resume)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    if device.type == "cuda":
        configure_cuda(args.deterministic)
    no_bars = None if args.progress_bar is None else not args.progress_bar  # None: bars only on a terminal

    # Data: the whole quantized set in memory (on the GPU when training there); own generator for the shuffle.
    data_order = torch.Generator().manual_seed(args.seed)
    train_loader, val_loader, test_loader = load_data(args.data_dir, args.dataset, args.bits, args.batch_size,
                                                      args.num_workers, download=state is None, generator=data_order,
                                                      eval_batch_size=args.eval_batch_size,
                                                      device=device if device.type == "cuda" else None)
    choice = speed_choices(args, device, len(train_loader.dataset), state and state["args"].get("auto_choices"))
    model, optimizer, loss_fn = build_model(args, device, choice)

    # Run folder: a fresh one, or the resumed one with everything after its last checkpoint discarded.
    # From here on an interrupt says what was kept (the run folder exists as soon as it is made).
    run_dir, writer = None, None
    start_epoch = 1 if state is None else state["epoch"] + 1
    epoch, last_saved = start_epoch, start_epoch - 1
    history = []  # the epoch records 1..epoch, which every checkpoint carries
    lock = contextlib.ExitStack()  # holds the run folder's lock (run_folder.locked) until the run ends
    try:
        if state is None:
            run_dir = run_folder.make_run_dir(args.log_dir, args.z_dim, args.run_name)
            lock.enter_context(run_folder.locked(run_dir))
            best_val_bpd, best_epoch, elapsed = math.inf, 0, 0.0
        else:
            run_dir = resolve_path(args.resume, "--resume")
            lock.enter_context(run_folder.locked(run_dir))  # before anything of the run is touched
            check_destination(run_dir / "checkpoints" / "last.pt")  # a planted link there: refused before training
            restore_training_state(state, run_dir / "checkpoints" / "last.pt", model, optimizer, data_order)
            best_epoch = state["best_epoch"]
            best_val_bpd, elapsed = state["best_val_bpd"], state["wall_time_s"]
            remove_stale_tmp(run_dir / "checkpoints")
            remove_stale_tmp(run_dir)
            history = run_folder.restore_history(run_dir, state)
        args_dict = {**args_to_dict(args), "auto_choices": choice}
        run_folder.write_args(run_dir, args_dict)
        ckpt_dir = run_dir / "checkpoints"
        # purge_step hides TensorBoard points an interrupted session logged after its last checkpoint.
        writer = SummaryWriter(run_dir, purge_step=start_epoch if state else None)
        where = ("" if state is None else f"  |  resuming at epoch {start_epoch}" if start_epoch <= args.epochs
                 else f"  |  all {args.epochs} epochs trained: testing")
        print(f"{hardware.summary_line(choice)}  |  device: {device}  |  run folder: {run_dir}  |  train/val/test "
              f"images: {len(train_loader.dataset)}/{len(val_loader.dataset)}/{len(test_loader.dataset)}{where}",
              flush=True)

        if start_epoch == 1 and 0 in args.sample_epochs:
            sample_and_save(model, 0, writer)
        for epoch in tqdm(range(start_epoch, args.epochs + 1), desc="epochs", initial=start_epoch - 1,
                          total=args.epochs, disable=no_bars, dynamic_ncols=True):
            # Train one epoch, then validate (a diverged model stops the run before anything is saved).
            t0 = time.time()
            batches = tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=no_bars, dynamic_ncols=True)
            train_stats = train_vae(model, batches, optimizer, choice["precision"], args.grad_clip,
                                    loss_fn=loss_fn)
            val_stats = test_vae(model, val_loader)
            if not math.isfinite(val_stats["bpd"]):
                raise NonFiniteLossError("validation")
            seconds = time.time() - t0

            # Log, then checkpoint: `best` on a new best validation bpd first, then `last`, so that
            # `last` never points to a best epoch whose weights were not saved.
            history.append(log_epoch(writer, run_dir, epoch, {"train": train_stats, "val": val_stats}, seconds))
            if val_stats["bpd"] < best_val_bpd:
                best_val_bpd, best_epoch = val_stats["bpd"], epoch
            ckpt = checkpoint_state(model, optimizer, epoch, best_val_bpd, best_epoch, args_dict,
                                    elapsed + time.time() - session_start, data_order, history)
            if best_epoch == epoch:
                save_checkpoint(ckpt_dir / "best.pt", ckpt)
            save_checkpoint(ckpt_dir / "last.pt", ckpt)
            last_saved = epoch

            # Sample grids on the report's schedule and after the last epoch (on a fork of the RNG: the
            # run's numbers do not change).
            if epoch in args.sample_epochs or epoch == args.epochs:
                sample_and_save(model, epoch, writer)
            tqdm.write(f"epoch {epoch:3d}/{args.epochs} | train bpd {train_stats['bpd']:.4f} | "
                       f"val bpd {val_stats['bpd']:.4f} | {seconds:.1f} s")
        metrics = test_phase(args, model, test_loader, ckpt_dir, writer, best_epoch, device)
        metrics.update(best_epoch=best_epoch, best_val_bpd=best_val_bpd if best_epoch > 0 else None,
                       epochs=args.epochs, seconds_per_epoch=sum(r["seconds"] for r in history) / len(history)
                       if history else None, wall_time_s=elapsed + time.time() - session_start, device=str(device),
                       machine=hardware.machine(device))
        run_folder.write_metrics(run_dir, metrics)
        log_hparams(writer, args, choice, metrics)
    except NonFiniteLossError as error:
        kept = (f"{ckpt_dir} holds the last finite epoch ({last_saved})" if last_saved else
                "no epoch finished, so no checkpoint was written")
        raise NonFiniteLossError(f"non-finite loss in epoch {epoch} ({error}); {kept}: try a lower --lr or "
                                 "--grad_clip 1.0") from None
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = signal_name_and_status(stop)
        raise Interrupted(f"stopped by {name}: {run_folder.resume_hint(run_dir, last_saved)}", status) from None
    finally:
        if writer is not None:
            writer.close()
        lock.close()

    iw_text = f" | importance-weighted (K={args.final_iw_samples}) {metrics['test_iw_bpd']:.4f}" \
        if "test_iw_bpd" in metrics else ""
    print(f"test bpd {metrics['test_bpd']:.4f}{iw_text} (best epoch {best_epoch}) | wall time "
          f"{metrics['wall_time_s']:.0f} s | {run_dir}")
    return metrics


HPARAMS = ("dataset", "bits", "objective", "train_samples", "flow", "flow_length", "z_dim", "num_filters", "lr",
           "batch_size", "epochs", "seed")
HPARAM_METRICS = ("test_bpd", "test_iw_bpd", "best_val_bpd", "test_kl_nats", "test_active_units", "seconds_per_epoch")


def log_hparams(writer, args, choice, metrics):
    """The run's hyperparameters and final metrics for TensorBoard's HParams tab (written by add_hparams
    into the subfolder hparams/ of the run), so a sweep compares there."""
    hparams = {name: getattr(args, name) for name in HPARAMS}
    hparams.update(precision=choice["precision"], compile=choice["compile"])
    writer.add_hparams(hparams, {f"hparams/{k}": metrics[k] for k in HPARAM_METRICS if metrics.get(k) is not None},
                       run_name="hparams")


def test_phase(args, model, test_loader, ckpt_dir, writer, best_epoch, device):
    """Test the best-by-validation model (the untrained one when no epoch ran): the ELBO, the importance-
    weighted bound (Burda et al. 2016) with --final_iw_samples, and the manifold of a z_dim 2 model."""
    if best_epoch > 0:
        model.load_state_dict(load_checkpoint(ckpt_dir / "best.pt", map_location=device)["model"])
    metrics = {f"test_{name}": value for name, value in test_vae(model, test_loader).items()}
    if args.final_iw_samples:
        start = time.time()
        per_image = evaluate_loader(model, test_loader, args.final_iw_samples, seed=args.seed,
                                    progress=args.progress_bar)
        record = evaluation_record(per_image, DATASETS[args.dataset].classes, checkpoint=str(ckpt_dir / "best.pt"),
                                   epoch=best_epoch, split="test",
                                   data_dir=str(args.data_dir), seed=args.seed, device=str(device),
                                   wall_time_s=time.time() - start)
        run_folder.write_eval(ckpt_dir.parent, "test", record)
        metrics.update(test_iw_bpd=record["iw_bpd"], test_iw_bpd_se=record["iw_bpd_se"],
                       test_active_units=record["active_units"], iw_samples=args.final_iw_samples)
    for name, value in metrics.items():
        if name.startswith("test_"):
            writer.add_scalar(name.replace("test_", "test/", 1), value, best_epoch)
    if args.z_dim == 2:
        manifold = visualize_manifold(model.decoder, grid_size=20)  # [3, H, W]
        save_image(ckpt_dir.parent / "vae_manifold.png", manifold)
        writer.add_image("manifold", manifold, best_epoch)
    return metrics


def cli(argv=None):
    """Parse arguments and run main; every expected failure is one line and an exit status (README):
    2 bad input, 1 diverged (non-finite loss), 130 SIGINT, 143 SIGTERM."""
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
