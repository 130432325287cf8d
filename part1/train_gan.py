"""Train the 2019 assignment's GAN (Goodfellow et al. 2014) on MNIST or FashionMNIST (default: 8-bit MNIST).

    python part1/train_gan.py --epochs 200 --data_dir ../shared/data

The kit's run folder (part1/README.md: args.json, history.jsonl with train_{d_loss,g_loss,d_real,d_fake} per
epoch, metrics.json, sample grids at --sample_epochs (start, middle, end by default) and after the last epoch,
interpolation.png, checkpoints/last.pt with both players and both optimizers, TensorBoard), resume, one-line
errors and exit statuses are train_torch.py's; the model and its steps are dgmkit/gan/model.py's, the
family dgmkit/gan/family.py's.
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line
    from dgmkit.cli import startup
    startup.guard_startup()

from dgmkit.cli.runner import run_cli
from dgmkit.engine.loop import fit
from dgmkit.gan.config import GANConfig
from dgmkit.gan.family import GAN_FAMILY

PROG = "train_gan.py"


def parse_args(argv=None):
    return GANConfig.parse(argv, PROG)


def main(args):
    """Train the GAN (dgmkit.engine.loop.fit: setup, the epochs, the test); returns the metrics dict of metrics.json."""
    return fit(args, GAN_FAMILY)


def cli(argv=None):
    """Parse arguments and run main; every expected failure is one line and an exit status (part1/README.md)."""
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
