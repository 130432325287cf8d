"""Train a RealNVP flow (Dinh et al. 2017) on MNIST or FashionMNIST at B bits (default: the 2019 assignment's 8-bit
MNIST); report the uniform-dequantization bound on -log P(x) in bits per dimension, which compares with the VAE's
bpd on the same data (both are upper bounds on the model's -log2 P(x) / D).

    python part1/train_realnvp.py --epochs 40 --data_dir ../shared/data

The kit's run folder (part1/README.md), resume, one-line errors and exit statuses are train_torch.py's; the model
is realnvp.py's. history.jsonl: {train,val}_{bpd,nll_nats,logdet_nats} per epoch (one noise draw per image);
metrics.json: test_bpd (the bound with --final_draws draws per test image), test_bpd_se (over images), draws;
eval_test.json: the same with every test image's bound (per_image_bpd), for paired comparisons.
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line (entry.py)
    import entry
    entry.guard_startup()

import math

import torch
import torchvision

from cli_common import run_cli
from configs_2019 import REALNVP_SCRIPT, RealNVPConfig
from loops import CompiledOrEager, train_epoch
from model import eval_mode
from realnvp import RealNVP, dequantized_nll
from tensorboard_log import Board, lines
from trainer import Family, fit
from utils import mean_and_se

PROG = "train_realnvp.py"
STATS = ("bpd", "nll_nats", "logdet_nats")


def parse_args(argv=None):
    return RealNVPConfig.parse(argv, PROG)


def main(args):
    """Train the flow (trainer.fit: setup, the epochs, the test of the best-by-validation model); returns the
    metrics dict of metrics.json."""
    return fit(args, REALNVP_FAMILY)


def build(config, device, choice):
    """The flow, Adam, and one epoch of maximum likelihood on dequantized images (compiled when chosen)."""
    model = RealNVP(levels=2 ** config.bits, hidden_channels=config.hidden_channels, num_blocks=config.num_blocks,
                    num_scales=config.num_scales, couplings=config.couplings).to(device)
    if choice["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = CompiledOrEager(model) if choice["compile"] else model

    def train_one_epoch(batches):
        """loops.train_epoch on nll_nats (one dequantization draw per image); averages of STATS."""
        stats = train_epoch(model, batches, optimizer, loss_fn, ("nll_nats", "bpd", "logdet_nats"),
                            grad_clip=config.grad_clip)
        return {name: stats[name] for name in STATS}  # history's order
    return model, optimizer, train_one_epoch


@torch.inference_mode()
def validate(model, loader):
    """STATS over a split, one dequantization draw per image (bpd: the validation bound the best model is by)."""
    with eval_mode(model):
        totals, count = torch.zeros(len(STATS), dtype=torch.float64), 0
        for imgs, _ in loader:
            terms = model(imgs.to(model.device))
            totals += torch.stack([terms[name] for name in STATS]).double().cpu() * imgs.shape[0]
            count += imgs.shape[0]
    return dict(zip(STATS, (totals / count).tolist()))


def sample_grid(model, config, count=64):
    """An 8x8 grid of samples at --temperature, [3, H, W] in [0, 1]."""
    with eval_mode(model):
        images = model.sample(count, config.temperature).float() / (model.levels - 1)  # [64, 1, 28, 28]
    return torchvision.utils.make_grid(images.cpu(), nrow=8)


def test_phase(run, model, writer, best_epoch):
    """The best-by-validation model on the test split: the dequantization bound with --final_draws noise draws per
    image (on a fork of the RNG seeded with --seed), its SE over images, and the last grid at --temperature."""
    config = run.config
    if best_epoch > 0:
        model.load_state_dict(run.dir.load_checkpoint("best", map_location=run.device, required=RealNVPConfig.REQUIRED,
                                                      script=PROG)["model"])
    per_image = []
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []), eval_mode(model):
        torch.manual_seed(config.seed)
        for imgs, _ in run.loaders[2]:
            per_image.append(dequantized_nll(model, imgs.to(run.device), config.final_draws).cpu())  # [B] nats
    bpd = torch.cat(per_image) / (model.dims * math.log(2))  # [N]
    mean, se = mean_and_se(bpd)
    run.dir.write_eval("test", {  # the per-image bounds: what a paired comparison with another model needs
        "checkpoint": str(run.dir.checkpoint("best" if best_epoch > 0 else "last")), "epoch": best_epoch,
        "split": "test", "dataset": config.dataset, "bits": config.bits, "data_dir": str(config.data_dir),
        "seed": config.seed, "device": str(run.device), "num_images": len(bpd), "draws": config.final_draws,
        "bpd": mean, "bpd_se": se, "per_image_bpd": bpd.tolist()})
    return {"test_bpd": mean, "test_bpd_se": se, "test_nll_nats": float(bpd.mean()) * model.dims * math.log(2),
            "draws": config.final_draws, "num_test_images": len(bpd),
            "parameters": sum(p.numel() for p in model.parameters())}


def summary(metrics):
    return (f"test bpd {metrics['test_bpd']:.4f} +- {metrics['test_bpd_se']:.4f} (dequantization bound, "
            f"{metrics['draws']} draws per image; best epoch {metrics['best_epoch']})")


BOARD = Board("flow_terms", {
    "bits per dimension (dequantization bound on -log2 P(x) / D; lower is better)": {
        "train and validation bpd": lines("bpd/train", "bpd/val")},
    "flow terms (nats per image)": {
        "-log p((x + u)/L) + D log L": lines("flow_terms/nll_nats_train", "flow_terms/nll_nats_val"),
        "log|det J| (pre-processing and flow)": lines("flow_terms/logdet_nats_train", "flow_terms/logdet_nats_val")},
}, ("dataset", "bits", "hidden_channels", "num_blocks", "num_scales", "couplings", "lr", "batch_size", "epochs",
    "seed"),
    ("test_bpd", "best_val_bpd", "seconds_per_epoch"))


REALNVP_FAMILY = Family(script=REALNVP_SCRIPT, build=build, validate=validate, sample_grid=sample_grid,
                        test=test_phase, shown=("bpd",), summary=summary, board=BOARD)


def cli(argv=None):
    """Parse arguments and run main; every expected failure is one line and an exit status (part1/README.md)."""
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
