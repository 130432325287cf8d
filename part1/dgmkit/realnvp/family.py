"""RealNVP as a model family of the training engine (engine/loop.py's fit): its build (the flow, Adam, one epoch of
maximum likelihood on dequantized images), validation, sample grid at --temperature, test phase (the dequantization
bound with --final_draws draws per image), its last line and its TensorBoard.
"""
import math

import torch
import torchvision

from dgmkit.contexts import eval_mode, forked_rng
from dgmkit.engine import memory
from dgmkit.engine.board import Board, lines
from dgmkit.engine.epoch import CompiledOrEager, train_epoch
from dgmkit.engine.loop import Family
from dgmkit.realnvp.config import REALNVP_SCRIPT, RealNVPConfig
from dgmkit.realnvp.model import RealNVP, dequantized_nll
from dgmkit.runs import paths
from dgmkit.stats import mean_and_se

STATS = ("bpd", "nll_nats", "logdet_nats")


SIZE_FLAGS = ("hidden_channels", "num_blocks", "couplings")  # the settings that size the flow's parameters


def make_model(config, **depths):
    """The flow of `config` on the current default device; depths (num_blocks, couplings) replace config's."""
    sizes = {"num_blocks": config.num_blocks, "couplings": config.couplings, **depths}
    return RealNVP(levels=2 ** config.bits, hidden_channels=config.hidden_channels, num_scales=config.num_scales,
                   **sizes)


def build(config, device, choice):
    """The flow (once engine/memory.py's check says it fits), Adam, and one epoch of maximum likelihood on
    dequantized images (compiled when chosen). Each residual block and coupling adds the same parameters, so the
    check counts the flow at depths 1 and 2 and interpolates (memory.parameter_count)."""
    memory.check_fits(lambda **depths: make_model(config, **depths), device, SIZE_FLAGS,
                      depths={"num_blocks": config.num_blocks, "couplings": config.couplings})
    model = make_model(config).to(device)
    if choice["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = CompiledOrEager(model) if choice["compile"] else model

    def train_one_epoch(batches):
        """engine/epoch.py's train_epoch on nll_nats (one dequantization draw per image); averages of STATS."""
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
                                                      script=REALNVP_SCRIPT.name)["model"])
    per_image = []
    with forked_rng(run.device, seed=config.seed), eval_mode(model):
        for imgs, _ in run.loaders[2]:
            per_image.append(dequantized_nll(model, imgs.to(run.device), config.final_draws).cpu())  # [B] nats
    bpd = torch.cat(per_image) / (model.dims * math.log(2))  # [N]
    mean, se = mean_and_se(bpd)
    run.dir.write_eval("test", {  # the per-image bounds: what a paired comparison with another model needs
        "checkpoint": paths.record(run.dir.checkpoint("best" if best_epoch > 0 else "last"), run.dir),
        "epoch": best_epoch, "split": "test", "dataset": config.dataset, "bits": config.bits,
        "data_dir": paths.record(config.data_dir, run.dir),  # both relative to the run folder (runs/paths.py)
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
