"""The training loop every model family shares: setup (session.start_run), epochs (train, validate, log, checkpoint,
sample), test; a family (the VAE of train_torch.py, RealNVP, the GAN) brings only its model and its steps.

What a run writes, how it resumes, its one-line errors and exit statuses are the same for every family.
"""
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from dgmkit.contexts import forked_rng
from dgmkit.engine import hardware
from dgmkit.engine.board import Board
from dgmkit.engine.session import resume_hint, start_run
from dgmkit.errors import Interrupted, NonFiniteLossError, Terminated, signal_name_and_status


@dataclasses.dataclass(frozen=True)
class Family:
    """What a model family brings to fit().

    build(config, device, choice) -> (model, optimizer or {name: optimizer}, train_epoch), where
        train_epoch(batches) -> {name: float} trains one epoch (a NaN/Inf loss: NonFiniteLossError);
    validate(model, loader) -> {name: float} with "bpd" (the best checkpoint is the lowest); None: no
        validation, every checkpoint is `last` and the test uses the final model;
    sample_grid(model, config) -> [3, H, W] in [0, 1]: the grid saved on --sample_epochs and after the last epoch;
    test(run, model, writer, best_epoch) -> metrics dict (test_* figures and what else the family reports);
    shown: the statistics of the per-epoch line; summary(metrics) -> the last line's text;
    divergence_hint: what the one line of a NaN/Inf loss suggests (flags of this family's script only).
    """
    script: Path
    build: Callable
    validate: Optional[Callable]
    sample_grid: Callable
    test: Callable
    shown: tuple
    summary: Callable
    board: Board
    divergence_hint: str = "try a lower --lr or --grad_clip 1.0"  # only flags the family's script accepts


def fit(args, family):
    """Train a new run of args (a RunConfig), or continue args.resume, then test it; returns the metrics dict
    also written to metrics.json."""
    run_dir, writer, epoch, progress = None, None, 0, None
    try:
        # Setup: settings, data, hardware choices, the model and the locked run folder (session.py).
        with start_run(args) as run:
            config = run.config
            if run.finished:
                print(f"{run.dir} already finished its {run.state['epoch']} epochs and was tested; pass --epochs N "
                      f"(N > {run.state['epoch']}) to train it further")
                return run.dir.read_metrics()
            train_loader, val_loader, _ = run.loaders
            model, optimizer, train_epoch = family.build(config, run.device, run.choice)
            progress = run.begin(model, optimizer)  # a new run's folder, or a resumed run's weights, RNG, history
            run_dir = run.dir
            writer = family.board.open_writer(run_dir, run.start_epoch if run.state else None)
            print_setup(run)
            if run.state is not None:  # a kill after the last checkpoint but before its grid: draw it now (below)
                redraw_missing_samples(family, model, config, run.state["epoch"], writer, run_dir)

            # Training: one epoch, then validation; a diverged model stops the run before anything is saved.
            no_bars = None if config.progress_bar is None else not config.progress_bar  # None: only on a terminal
            if run.start_epoch == 1 and 0 in config.sample_epochs:
                save_samples(family, model, config, 0, writer, run_dir)
            for epoch in tqdm(range(run.start_epoch, config.epochs + 1), desc="epochs", initial=run.start_epoch - 1,
                              total=config.epochs, disable=no_bars, dynamic_ncols=True):
                t0 = time.time()
                batches = tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=no_bars, dynamic_ncols=True)
                stats = {"train": train_epoch(batches)}
                if family.validate is not None:
                    stats["val"] = family.validate(model, val_loader)
                    if not math.isfinite(stats["val"]["bpd"]):
                        raise NonFiniteLossError("validation")
                seconds = time.time() - t0

                # Log, then checkpoint (best first, then last), then sample on the report's schedule and after
                # the last epoch (on a fork of the RNG: the run's numbers do not change).
                record = {"epoch": epoch, "seconds": seconds, **{f"{split}_{name}": value for split, values in
                                                                  stats.items() for name, value in values.items()}}
                family.board.log_epoch(writer, epoch, stats, seconds)
                run_dir.append_history(record)
                progress.history.append(record)
                if "val" in stats and stats["val"]["bpd"] < progress.best_val_bpd:
                    progress.best_val_bpd, progress.best_epoch = stats["val"]["bpd"], epoch
                run.save(model, optimizer, epoch, progress)
                if epoch in config.sample_epochs or epoch == config.epochs:
                    save_samples(family, model, config, epoch, writer, run_dir)
                tqdm.write(f"epoch {epoch:3d}/{config.epochs} | " + " | ".join(
                    f"{split} {name} {stats[split][name]:.4f}" for split in stats for name in family.shown
                    if name in stats[split]) + f" | {seconds:.1f} s")

            # Test: the best-by-validation model (the last one without validation).
            metrics = family.test(run, model, writer, progress.best_epoch)
            history = progress.history
            metrics.update(best_epoch=progress.best_epoch,
                           best_val_bpd=progress.best_val_bpd if progress.best_epoch > 0 else None,
                           epochs=config.epochs, seconds_per_epoch=sum(r["seconds"] for r in history) / len(history)
                           if history else None, wall_time_s=run.wall_time_s(progress), device=str(run.device),
                           machine=hardware.machine(run.device))
            run_dir.write_metrics(metrics)
            family.board.log_final(writer, run.settings(), metrics, progress.best_epoch or config.epochs)
    except NonFiniteLossError as error:
        last_saved = progress.last_saved if progress else 0
        kept = (f"{run_dir.checkpoint_dir} holds the last finite epoch ({last_saved})" if last_saved else
                "no epoch finished, so no checkpoint was written")
        raise NonFiniteLossError(f"non-finite loss in epoch {epoch} ({error}); {kept}: {family.divergence_hint}"
                                 ) from None
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = signal_name_and_status(stop)
        kept = resume_hint(run_dir, progress.last_saved if progress else 0, family.script)
        raise Interrupted(f"stopped by {name}: {kept}", status) from None
    finally:
        if writer is not None:
            writer.close()
    print(f"{family.summary(metrics)} | wall time {metrics['wall_time_s']:.0f} s | {run_dir}")
    return metrics


def save_samples(family, model, config, epoch, writer, run_dir):
    """The family's sample grid as samples_epoch_XXX.png and in TensorBoard, drawn on a fork of the RNG state
    (the run's random stream, and so its numbers, do not depend on when grids are drawn)."""
    with forked_rng(model.device):
        grid = family.sample_grid(model, config)  # [3, H, W] in [0, 1]
    run_dir.save_samples(epoch, grid)
    writer.add_image("samples", grid, global_step=epoch)


def redraw_missing_samples(family, model, config, epoch, writer, run_dir):
    """The grid of the resumed checkpoint's `epoch`, when it is due (--sample_epochs or the last epoch) and missing:
    a run killed after saving that checkpoint but before writing the grid. The random state and weights are those
    the checkpoint saved, exactly those the grid was to be drawn from, so the grid is the uninterrupted run's."""
    if (epoch in config.sample_epochs or epoch == config.epochs) and not run_dir.samples_path(epoch).is_file():
        save_samples(family, model, config, epoch, writer, run_dir)


def print_setup(run):
    """One line: the hardware choices, the device, the run folder, the split sizes and where a resume starts."""
    config, (train, val, test) = run.config, run.loaders
    where = ("" if run.state is None else f"  |  resuming at epoch {run.start_epoch}"
             if run.start_epoch <= config.epochs else f"  |  all {config.epochs} epochs trained: testing")
    print(f"{hardware.summary_line(run.choice)}  |  device: {run.device}  |  run folder: {run.dir}  |  train/val/test "
          f"images: {len(train.dataset)}/{len(val.dataset)}/{len(test.dataset)}{where}", flush=True)
