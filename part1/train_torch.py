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

import time

import torch

from cli_common import run_cli
from config import TRAIN_SCRIPT, parse_train_args
from dataset import DATASETS
from estimates import evaluate_loader, evaluation_record
from loops import build_model, sample_grid, test_vae, train_vae
from model import VAE  # noqa: F401  (the assignment's API: train_torch.VAE)
from run_folder import RunDir
from trainer import Family, fit
from utils import visualize_manifold

PROG = "train_torch.py"
__all__ = ["VAE", "train_vae", "test_vae", "sample_and_save", "main", "parse_args", "cli"]


def parse_args(argv=None):
    """The run's settings, a frozen config.TrainConfig (attribute access as on argparse's namespace)."""
    return parse_train_args(argv, PROG)


def main(args):
    """Train with Adam, validate every epoch, test the best-by-validation model (trainer.fit: setup, the epochs,
    the test). With args.resume set, continue that run folder from the epoch after its last checkpoint.
    Returns:
        the metrics dict also written to metrics.json.
    """
    return fit(args, VAE_FAMILY)


def build(config, device, choice):
    """The VAE, its Adam optimizer, and one epoch of training on its objective (train_vae)."""
    model, optimizer, loss_fn = build_model(config, device, choice)

    def train_epoch(batches):
        return train_vae(model, batches, optimizer, choice["precision"], config.grad_clip, loss_fn=loss_fn)
    return model, optimizer, train_epoch


def test_phase(run, model, writer, best_epoch):
    """Test the best-by-validation model (the untrained one when no epoch ran): the ELBO, the importance-
    weighted bound (Burda et al. 2016) with --final_iw_samples, and the manifold of a z_dim 2 model."""
    config, run_dir, test_loader = run.config, run.dir, run.loaders[2]
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


def summary(metrics):
    iw = (f" | importance-weighted (K={metrics['iw_samples']}) {metrics['test_iw_bpd']:.4f}"
          if "test_iw_bpd" in metrics else "")
    return f"test bpd {metrics['test_bpd']:.4f}{iw} (best epoch {metrics['best_epoch']})"


def grid(model, config):
    """The 8x8 sample grid of the report's schedule (loops.sample_grid)."""
    return sample_grid(model)


VAE_FAMILY = Family(script=TRAIN_SCRIPT, build=build, validate=test_vae, sample_grid=grid, test=test_phase,
                    shown=("bpd",), summary=summary)


def sample_and_save(model, epoch, summary_writer, batch_size=64, run_dir=None):
    """Save an 8x8 grid of samples as samples_epoch_XXX.png in the run folder (run_dir; None: the writer's
    folder) and log it to TensorBoard (the assignment's function; loops.sample_grid draws it). Drawn on a fork of
    the RNG state, so the training run's numbers do not depend on when grids are drawn."""
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        grid = sample_grid(model, batch_size)  # [3, H, W] in [0, 1]
    (run_dir or RunDir(summary_writer.log_dir)).save_samples(epoch, grid)
    summary_writer.add_image("samples", grid, global_step=epoch)


def cli(argv=None):
    """Parse arguments and run main; every expected failure is one line and an exit status (part1/README.md):
    2 bad input, 1 diverged (non-finite loss), 130 SIGINT, 143 SIGTERM."""
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
