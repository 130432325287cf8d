"""Train a VAE on MNIST or FashionMNIST at B bits per pixel (default: the assignment's 4-bit FashionMNIST); report
the negative ELBO in bits per dimension.

    python train_torch.py --z_dim 20          # from part1/ or as part1/train_torch.py

Every run writes a fresh folder under --log_dir (its layout and file formats: dgmkit/runs/folder.py and
part1/README.md): args.json, TensorBoard events, history.jsonl, sample grids, checkpoints/{best,last}.pt,
metrics.json and, for z_dim == 2, vae_manifold.png.
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line
    from dgmkit.cli import startup
    startup.guard_startup()

from dgmkit.cli.runner import run_cli
from dgmkit.contexts import forked_rng
from dgmkit.engine.loop import fit
from dgmkit.runs.folder import RunDir
from dgmkit.vae.config import parse_train_args
from dgmkit.vae.family import VAE_FAMILY
from dgmkit.vae.model import VAE  # noqa: F401  (the assignment's API: train_torch.VAE)
from dgmkit.vae.training import sample_grid, test_vae, train_vae  # noqa: F401  (the assignment's API)

PROG = "train_torch.py"
__all__ = ["VAE", "train_vae", "test_vae", "sample_and_save", "main", "parse_args", "cli"]


def parse_args(argv=None):
    """The run's settings, a frozen dgmkit.vae.config.TrainConfig (attribute access as on argparse's namespace)."""
    return parse_train_args(argv, PROG)


def main(args):
    """Train with Adam, validate every epoch, test the best-by-validation model (dgmkit.engine.loop.fit: setup, the
    epochs, the test; the VAE's steps are dgmkit/vae/family.py's). With args.resume set, continue that run folder from the epoch after its last checkpoint.
    Returns:
        the metrics dict also written to metrics.json.
    """
    return fit(args, VAE_FAMILY)


def sample_and_save(model, epoch, summary_writer, batch_size=64, run_dir=None):
    """Save an 8x8 grid of samples as samples_epoch_XXX.png in the run folder (run_dir; None: the writer's
    folder) and log it to TensorBoard (the assignment's function; dgmkit.vae.training.sample_grid draws it). Drawn on
    a fork of the RNG state, so the training run's numbers do not depend on when grids are drawn."""
    with forked_rng(model.device):
        grid = sample_grid(model, batch_size)  # [3, H, W] in [0, 1]
    (run_dir or RunDir(summary_writer.log_dir)).save_samples(epoch, grid)
    summary_writer.add_image("samples", grid, global_step=epoch)


def cli(argv=None):
    """Parse arguments and run main; every expected failure is one line and an exit status (part1/README.md):
    2 bad input, 1 diverged (non-finite loss), 130 SIGINT, 143 SIGTERM."""
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
