"""Train a VAE on 4-bit FashionMNIST; report the negative ELBO in bits per dimension.

    python train_torch.py --z_dim 20          # from part1/ or as part1/train_torch.py

Every run writes a fresh folder under --log_dir: args.json, TensorBoard events, history.jsonl
(one line per epoch), sample grids, checkpoints/{best,last}.pt, metrics.json and, for
z_dim == 2, vae_manifold.png.
"""
import argparse
import json
import math
import os
import random
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from cnn_encoder_decoder import CNNDecoder, CNNEncoder
from fmnist import DataError, fmnist
from utils import KLD, elbo_to_bpd, sample_reparameterize, visualize_manifold

PART1_DIR = Path(__file__).resolve().parent
PROG = "train_torch.py"


class UserError(Exception):
    """A mistake in what the user asked for, with a one-line message (exit status 2)."""


class VAE(nn.Module):
    def __init__(self, num_filters, z_dim, lr):
        """A VAE with a conv encoder q(z|x), a standard normal prior and a categorical decoder.

        Args:
            num_filters: channels of the first conv layers (later ones use twice as many).
            z_dim: dimensionality of the latent space.
            lr: learning rate, kept with the model so a checkpoint's settings are complete.
        """
        super().__init__()
        self.z_dim = z_dim
        self.lr = lr
        self.encoder = CNNEncoder(z_dim=z_dim, num_filters=num_filters)
        self.decoder = CNNDecoder(z_dim=z_dim, num_filters=num_filters)

    def forward(self, imgs):
        """The negative ELBO of a batch, with one reparameterized sample z per image.

        Args:
            imgs: [B, 1, 28, 28] long images with values 0..15.
        Returns (three scalars, each an average over the B images):
            L_rec: reconstruction loss -log p(x|z), cross-entropy summed over the 784 pixels, nats.
            L_reg: KL(q(z|x) || N(0, I)), nats.
            bpd: (L_rec + L_reg) in bits per dimension.
        """
        mean, log_std = self.encoder(imgs)  # [B, z_dim] each
        z = sample_reparameterize(mean, torch.exp(log_std))  # [B, z_dim]
        logits = self.decoder(z)  # [B, 16, 28, 28]
        # Sum over pixels (the image's log-likelihood), mean over images: the per-image ELBO.
        L_rec = F.cross_entropy(logits, imgs.squeeze(1), reduction="sum") / imgs.shape[0]
        L_reg = KLD(mean, log_std).mean()  # KL to N(0, I), closed form
        bpd = elbo_to_bpd(L_rec + L_reg, imgs.shape)
        return L_rec, L_reg, bpd

    @torch.no_grad()
    def sample(self, batch_size):
        """Ancestral sampling: z ~ N(0, I), then every pixel from its categorical p(x|z).

        Returns:
            x_samples: [B, 1, 28, 28] long images with values 0..15.
        """
        z = torch.randn(batch_size, self.z_dim, device=self.device)  # [B, z_dim]
        logits = self.decoder(z)  # [B, 16, 28, 28]
        probs = logits.float().softmax(dim=1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])  # [B*784, 16]
        x_samples = torch.multinomial(probs, num_samples=1)  # [B*784, 1]
        return x_samples.reshape(batch_size, 1, *logits.shape[2:])  # [B, 1, 28, 28]

    @property
    def device(self):
        return self.decoder.device


@torch.no_grad()
def sample_and_save(model, epoch, summary_writer, batch_size=64):
    """Save an 8x8 grid of samples as samples_epoch_XXX.png in the run folder and log it to TensorBoard.

    Sampling runs in eval mode on a fork of the RNG state, so the training run's random
    stream (and hence its numbers) does not depend on when grids are drawn.
    """
    was_training = model.training
    model.eval()
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        samples = model.sample(batch_size)  # [64, 1, 28, 28] in 0..15
    grid = torchvision.utils.make_grid(samples.float().cpu() / 15, nrow=8)  # [3, H, W] in [0, 1]
    torchvision.utils.save_image(grid, Path(summary_writer.log_dir) / f"samples_epoch_{epoch:03d}.png")
    summary_writer.add_image("samples", grid, global_step=epoch)
    model.train(was_training)


def train_vae(model, loader, optimizer):
    """One epoch of training; the loss is the batch's bpd (the negative ELBO, rescaled).

    Returns:
        (bpd, rec_loss, reg_loss): averages over the images seen, weighted by batch size
        (bits per dimension; nats per image; nats per image).
    """
    model.train()
    totals = torch.zeros(3, device=model.device)  # batch-size-weighted sums of bpd, L_rec, L_reg
    num_images = 0
    for imgs, _ in loader:
        imgs = imgs.to(model.device, non_blocking=True)  # [B, 1, 28, 28]
        L_rec, L_reg, bpd = model(imgs)
        optimizer.zero_grad(set_to_none=True)
        bpd.backward()
        optimizer.step()
        # Accumulate on the device: no .item() per step, so no host sync.
        totals += torch.stack([bpd, L_rec, L_reg]).detach() * imgs.shape[0]
        num_images += imgs.shape[0]
    return tuple((totals / num_images).tolist())


@torch.no_grad()
def test_vae(model, loader):
    """The ELBO of a whole split (one sample of z per image), in eval mode.

    Returns:
        (bpd, rec_loss, reg_loss): dataset averages weighted by batch size, as in `train_vae`.
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, device=model.device)
    num_images = 0
    for imgs, _ in loader:
        imgs = imgs.to(model.device, non_blocking=True)
        L_rec, L_reg, bpd = model(imgs)
        totals += torch.stack([bpd, L_rec, L_reg]) * imgs.shape[0]
        num_images += imgs.shape[0]
    model.train(was_training)
    return tuple((totals / num_images).tolist())


def seed_everything(seed):
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name):
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA device; "
                        "use --device cpu (or auto)")
    return torch.device(name)


def make_run_dir(log_dir, z_dim):
    """Create a fresh, timestamped run folder under `log_dir` (never reuses an existing one)."""
    stamp = f"{datetime.now():%Y-%m-%d_%H-%M-%S}_z{z_dim}"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            run_dir = log_dir / (stamp if attempt == 0 else f"{stamp}_{attempt}")
            try:
                run_dir.mkdir()
            except FileExistsError:
                continue
            (run_dir / "checkpoints").mkdir()
            return run_dir
    except OSError as error:
        raise UserError(f"cannot create a run folder in --log_dir {log_dir}: {error.strerror}; "
                        "choose a writable folder") from None
    raise UserError(f"--log_dir {log_dir} already holds 1000 runs named {stamp}*")


def save_checkpoint(path, state):
    """torch.save to a temporary file in the same folder, fsync, then atomically rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def log_epoch(writer, history_path, epoch, stats, seconds):
    """Log one epoch's train/val bpd, reconstruction loss, KL and ELBO to TensorBoard and history.jsonl.

    `stats` maps a split name to its (bpd, rec_loss, reg_loss); the ELBO itself is
    -(rec_loss + reg_loss) in nats per image.
    """
    record = {"epoch": epoch, "seconds": seconds}
    for split, (bpd, rec, reg) in stats.items():
        values = {"bpd": bpd, "rec_loss": rec, "kl": reg, "elbo": -(rec + reg)}
        for name, value in values.items():
            writer.add_scalar(f"{split}/{name}", value, epoch)
            record[f"{split}_{name}"] = value
    writer.add_scalar("time/epoch_seconds", seconds, epoch)
    with open(history_path, "a") as f:
        f.write(json.dumps(record) + "\n")


def main(args):
    """Train with Adam, validate every epoch, test the best-by-validation model.

    Returns:
        the metrics dict also written to metrics.json.
    """
    start_time = time.time()
    seed_everything(args.seed)
    device = resolve_device(args.device)
    # tqdm's disable=None means "only on a terminal", the default of --progress_bar.
    no_bars = None if args.progress_bar is None else not args.progress_bar

    # Data: the whole 4-bit set in memory; the training shuffle has its own seeded generator.
    data_order = torch.Generator().manual_seed(args.seed)
    train_loader, val_loader, test_loader = fmnist(
        args.data_dir, args.batch_size, args.num_workers, generator=data_order, pin_memory=device.type == "cuda")

    # Run folder: arguments first, so even an interrupted run says how it was started.
    run_dir = make_run_dir(args.log_dir, args.z_dim)
    ckpt_dir = run_dir / "checkpoints"
    args_dict = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_json(run_dir / "args.json", args_dict)
    writer = SummaryWriter(run_dir)
    print(f"run folder: {run_dir}  |  device: {device}  |  train/val/test images: "
          f"{len(train_loader.dataset)}/{len(val_loader.dataset)}/{len(test_loader.dataset)}")

    # Model and optimizer (Adam, as in the assignment).
    model = VAE(num_filters=args.num_filters, z_dim=args.z_dim, lr=args.lr).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    if 0 in args.sample_epochs:
        sample_and_save(model, 0, writer)
    best_val_bpd, best_epoch, epoch_seconds = math.inf, 0, []
    for epoch in tqdm(range(1, args.epochs + 1), desc="epochs", disable=no_bars, dynamic_ncols=True):
        # Train one epoch, then validate.
        t0 = time.time()
        batches = tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=no_bars, dynamic_ncols=True)
        train_stats = train_vae(model, batches, optimizer)
        val_stats = test_vae(model, val_loader)
        seconds = time.time() - t0
        epoch_seconds.append(seconds)

        # Log, then checkpoint: `best` on a new best validation bpd, `last` every epoch.
        log_epoch(writer, run_dir / "history.jsonl", epoch, {"train": train_stats, "val": val_stats}, seconds)
        if val_stats[0] < best_val_bpd:
            best_val_bpd, best_epoch = val_stats[0], epoch
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "best_val_bpd": best_val_bpd, "best_epoch": best_epoch, "args": args_dict}
        if best_epoch == epoch:
            save_checkpoint(ckpt_dir / "best.pt", state)
        save_checkpoint(ckpt_dir / "last.pt", state)

        # Sample grids on the report's schedule.
        if epoch in args.sample_epochs:
            sample_and_save(model, epoch, writer)
        tqdm.write(f"epoch {epoch:3d}/{args.epochs} | train bpd {train_stats[0]:.4f} | "
                   f"val bpd {val_stats[0]:.4f} | {seconds:.1f} s")

    # Test the best-by-validation model (the untrained one when no epoch ran).
    if best_epoch > 0:
        model.load_state_dict(torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=True)["model"])
    test_bpd, test_rec, test_reg = test_vae(model, test_loader)
    for name, value in {"bpd": test_bpd, "rec_loss": test_rec, "kl": test_reg, "elbo": -(test_rec + test_reg)}.items():
        writer.add_scalar(f"test/{name}", value, best_epoch)
    if args.z_dim == 2:
        manifold = visualize_manifold(model.decoder, grid_size=20)  # [3, H, W]
        torchvision.utils.save_image(manifold, run_dir / "vae_manifold.png")
        writer.add_image("manifold", manifold, best_epoch)
    writer.close()

    metrics = {
        "test_bpd": test_bpd, "test_rec_loss": test_rec, "test_reg_loss": test_reg,
        "best_epoch": best_epoch, "best_val_bpd": best_val_bpd if best_epoch > 0 else None,
        "epochs": args.epochs, "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else None,
        "wall_time_s": time.time() - start_time, "device": str(device),
    }
    write_json(run_dir / "metrics.json", metrics)
    print(f"test bpd {test_bpd:.4f} (best epoch {best_epoch}) | wall time {metrics['wall_time_s']:.0f} s | {run_dir}")
    return metrics


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--z_dim", type=_int_at_least(1), default=20, help="dimensionality of the latent space")
    model.add_argument("--num_filters", type=_int_at_least(1), default=32,
                       help="channels of the first conv layers (later ones use twice as many)")

    optim = parser.add_argument_group("optimization")
    optim.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    optim.add_argument("--batch_size", type=_int_at_least(1), default=128, help="images per minibatch")
    optim.add_argument("--epochs", type=_int_at_least(0), default=80, help="training epochs")
    optim.add_argument("--seed", type=int, default=42, help="seed of every random number generator")

    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", type=Path, default=PART1_DIR.parent / "data",
                      help="folder holding FashionMNIST/raw/ (downloaded there when missing)")
    data.add_argument("--num_workers", type=_int_at_least(0), default=0,
                      help="DataLoader worker processes (the data are in memory: 0 is usually fastest)")

    logging = parser.add_argument_group("logging")
    logging.add_argument("--log_dir", type=Path, default=PART1_DIR / "VAE_logs",
                         help="each run gets a fresh timestamped folder in here")
    logging.add_argument("--sample_epochs", type=_int_at_least(0), nargs="*", default=[0, 10, 80],
                         help="epochs after which an 8x8 sample grid is saved (0: before training)")
    logging.add_argument("--progress_bar", action=argparse.BooleanOptionalAction, default=None,
                         help="tqdm progress bars over epochs and batches (unset: only when stderr is a terminal)")

    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                          help="where to train; auto = CUDA when available")
    return parser.parse_args(argv)


def cli(argv=None):
    args = parse_args(argv)
    try:
        main(args)
    except (DataError, UserError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
