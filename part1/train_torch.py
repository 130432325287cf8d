"""Train a VAE on MNIST or FashionMNIST at B bits per pixel (default: the assignment's 4-bit FashionMNIST); report
the negative ELBO in bits per dimension.

    python train_torch.py --z_dim 20          # from part1/ or as part1/train_torch.py

Every run writes a fresh folder under --log_dir (its layout and file formats: run_folder.py and
part1/README.md): args.json, TensorBoard events, history.jsonl, sample grids, checkpoints/{best,last}.pt,
metrics.json and, for z_dim == 2, vae_manifold.png.
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line (entry.py)
    import entry
    entry.guard_startup()

import math
import time

import torch
from tqdm import tqdm

import hardware
import tensorboard_log
from cli_common import Interrupted, Terminated, run_cli, signal_name_and_status
from config import parse_train_args
from dataset import DATASETS
from estimates import evaluate_loader, evaluation_record
from loops import NonFiniteLossError, build_model, sample_grid, test_vae, train_vae
from model import VAE  # noqa: F401  (the assignment's API: train_torch.VAE)
from run_folder import RunDir
from session import resume_hint, start_run
from utils import visualize_manifold

PROG = "train_torch.py"
__all__ = ["VAE", "train_vae", "test_vae", "sample_and_save", "main", "parse_args", "cli"]


def parse_args(argv=None):
    """The run's settings, a frozen config.TrainConfig (attribute access as on argparse's namespace)."""
    return parse_train_args(argv, PROG)


def main(args):
    """Train with Adam, validate every epoch, test the best-by-validation model.

    With args.resume set, continue that run folder from the epoch after its last checkpoint.
    Returns:
        the metrics dict also written to metrics.json.
    """
    # Setup: settings, data, hardware choices and the locked run folder of a new or resumed run (session.py).
    run_dir, writer, epoch, progress = None, None, 0, None
    try:
        with start_run(args) as run:
            config = run.config
            if run.finished:
                print(f"{run.dir} already finished its {run.state['epoch']} epochs and was tested; pass --epochs N "
                      f"(N > {run.state['epoch']}) to train it further")
                return run.dir.read_metrics()
            train_loader, val_loader, test_loader = run.loaders
            model, optimizer, loss_fn = build_model(config, run.device, run.choice)
            progress = run.begin(model, optimizer)  # a new run's folder, or a resumed run's weights, RNG, history
            run_dir = run.dir
            writer = tensorboard_log.open_writer(run_dir, run.start_epoch if run.state else None)
            print_setup(run)

            # Training: one epoch, then validation; a diverged model stops the run before anything is saved.
            no_bars = None if config.progress_bar is None else not config.progress_bar  # None: only on a terminal
            if run.start_epoch == 1 and 0 in config.sample_epochs:
                sample_and_save(model, 0, writer, run_dir=run_dir)
            for epoch in tqdm(range(run.start_epoch, config.epochs + 1), desc="epochs", initial=run.start_epoch - 1,
                              total=config.epochs, disable=no_bars, dynamic_ncols=True):
                t0 = time.time()
                batches = tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=no_bars, dynamic_ncols=True)
                train_stats = train_vae(model, batches, optimizer, run.choice["precision"], config.grad_clip,
                                        loss_fn=loss_fn)
                val_stats = test_vae(model, val_loader)
                if not math.isfinite(val_stats["bpd"]):
                    raise NonFiniteLossError("validation")
                seconds = time.time() - t0

                # Log, then checkpoint (best first, then last), then sample on the report's schedule and after
                # the last epoch (on a fork of the RNG: the run's numbers do not change).
                stats = {"train": train_stats, "val": val_stats}
                record = {"epoch": epoch, "seconds": seconds, **{f"{split}_{name}": value for split, values in
                                                                  stats.items() for name, value in values.items()}}
                tensorboard_log.log_epoch(writer, epoch, stats, seconds)
                run_dir.append_history(record)
                progress.history.append(record)
                if val_stats["bpd"] < progress.best_val_bpd:
                    progress.best_val_bpd, progress.best_epoch = val_stats["bpd"], epoch
                run.save(model, optimizer, epoch, progress)
                if epoch in config.sample_epochs or epoch == config.epochs:
                    sample_and_save(model, epoch, writer, run_dir=run_dir)
                tqdm.write(f"epoch {epoch:3d}/{config.epochs} | train bpd {train_stats['bpd']:.4f} | "
                           f"val bpd {val_stats['bpd']:.4f} | {seconds:.1f} s")

            # Test: the best-by-validation model.
            metrics = test_phase(run, model, test_loader, writer, progress.best_epoch)
            history = progress.history
            metrics.update(best_epoch=progress.best_epoch,
                           best_val_bpd=progress.best_val_bpd if progress.best_epoch > 0 else None,
                           epochs=config.epochs, seconds_per_epoch=sum(r["seconds"] for r in history) / len(history)
                           if history else None, wall_time_s=run.wall_time_s(progress), device=str(run.device),
                           machine=hardware.machine(run.device))
            run_dir.write_metrics(metrics)
            tensorboard_log.log_final(writer, run.settings(), metrics, progress.best_epoch)
    except NonFiniteLossError as error:
        last_saved = progress.last_saved if progress else 0
        kept = (f"{run_dir.checkpoint_dir} holds the last finite epoch ({last_saved})" if last_saved else
                "no epoch finished, so no checkpoint was written")
        raise NonFiniteLossError(f"non-finite loss in epoch {epoch} ({error}); {kept}: try a lower --lr or "
                                 "--grad_clip 1.0") from None
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = signal_name_and_status(stop)
        raise Interrupted(f"stopped by {name}: {resume_hint(run_dir, progress.last_saved if progress else 0)}",
                          status) from None
    finally:
        if writer is not None:
            writer.close()

    iw_text = f" | importance-weighted (K={config.final_iw_samples}) {metrics['test_iw_bpd']:.4f}" \
        if "test_iw_bpd" in metrics else ""
    print(f"test bpd {metrics['test_bpd']:.4f}{iw_text} (best epoch {progress.best_epoch}) | wall time "
          f"{metrics['wall_time_s']:.0f} s | {run_dir}")
    return metrics


def sample_and_save(model, epoch, summary_writer, batch_size=64, run_dir=None):
    """Save an 8x8 grid of samples as samples_epoch_XXX.png in the run folder (run_dir; None: the writer's
    folder) and log it to TensorBoard (the assignment's function; loops.sample_grid draws it)."""
    grid = sample_grid(model, batch_size)  # [3, H, W] in [0, 1]
    (run_dir or RunDir(summary_writer.log_dir)).save_samples(epoch, grid)
    summary_writer.add_image("samples", grid, global_step=epoch)


def print_setup(run):
    """One line: the hardware choices, the device, the run folder, the split sizes and where a resume starts."""
    config, (train, val, test) = run.config, run.loaders
    where = ("" if run.state is None else f"  |  resuming at epoch {run.start_epoch}"
             if run.start_epoch <= config.epochs else f"  |  all {config.epochs} epochs trained: testing")
    print(f"{hardware.summary_line(run.choice)}  |  device: {run.device}  |  run folder: {run.dir}  |  train/val/test "
          f"images: {len(train.dataset)}/{len(val.dataset)}/{len(test.dataset)}{where}", flush=True)


def test_phase(run, model, test_loader, writer, best_epoch):
    """Test the best-by-validation model (the untrained one when no epoch ran): the ELBO, the importance-
    weighted bound (Burda et al. 2016) with --final_iw_samples, and the manifold of a z_dim 2 model."""
    config, run_dir = run.config, run.dir
    if best_epoch > 0:
        model.load_state_dict(run_dir.load_checkpoint("best", map_location=run.device)["model"])
    metrics = {f"test_{name}": value for name, value in test_vae(model, test_loader).items()}
    if config.final_iw_samples:
        start = time.time()
        per_image = evaluate_loader(model, test_loader, config.final_iw_samples, seed=config.seed,
                                    progress=config.progress_bar)
        record = evaluation_record(per_image, DATASETS[config.dataset].classes,
                                   checkpoint=str(run_dir.checkpoint("best")), epoch=best_epoch, split="test",
                                   data_dir=str(config.data_dir), seed=config.seed, device=str(run.device),
                                   wall_time_s=time.time() - start)
        run_dir.write_eval("test", record)
        metrics.update(test_iw_bpd=record["iw_bpd"], test_iw_bpd_se=record["iw_bpd_se"],
                       test_active_units=record["active_units"], iw_samples=config.final_iw_samples)
    if config.z_dim == 2:
        manifold = visualize_manifold(model.decoder, grid_size=20)  # [3, H, W]
        run_dir.save_manifold(manifold)
        writer.add_image("manifold", manifold, best_epoch)
    return metrics


def cli(argv=None):
    """Parse arguments and run main; every expected failure is one line and an exit status (part1/README.md):
    2 bad input, 1 diverged (non-finite loss), 130 SIGINT, 143 SIGTERM."""
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
