"""Train a RealNVP flow (Dinh et al. 2017) on MNIST or FashionMNIST at B bits (default: the 2019 assignment's 8-bit
MNIST); report the uniform-dequantization bound on -log P(x) in bits per dimension, which compares with the VAE's
bpd on the same data (both are upper bounds on the model's -log2 P(x) / D).

    python part1/train_realnvp.py --epochs 40 --data_dir ../shared/data

The kit's run folder (part1/README.md), resume, one-line errors and exit statuses are train_torch.py's; the model
is dgmkit/realnvp/model.py's, its steps dgmkit/realnvp/family.py's. history.jsonl: {train,val}_{bpd,nll_nats,logdet_nats} per epoch (one noise draw per image);
metrics.json: test_bpd (the bound with --final_draws draws per test image), test_bpd_se (over images), draws;
eval_test.json: the same with every test image's bound (per_image_bpd), for paired comparisons.
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line
    from dgmkit.cli import startup
    startup.guard_startup()

from dgmkit.cli.runner import run_cli
from dgmkit.engine.loop import fit
from dgmkit.realnvp.config import RealNVPConfig
from dgmkit.realnvp.family import REALNVP_FAMILY

PROG = "train_realnvp.py"


def parse_args(argv=None):
    return RealNVPConfig.parse(argv, PROG)


def main(args):
    """Train the flow (dgmkit.engine.loop.fit: setup, the epochs, the test of the best-by-validation model); returns the
    metrics dict of metrics.json."""
    return fit(args, REALNVP_FAMILY)


def cli(argv=None):
    """Parse arguments and run main; every expected failure is one line and an exit status (part1/README.md)."""
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
