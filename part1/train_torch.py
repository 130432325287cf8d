"""Train a VAE on 4-bit FashionMNIST; report the negative ELBO in bits per dimension.

    python train_torch.py --z_dim 20          # from part1/ or as part1/train_torch.py

Every run writes a fresh folder under --log_dir: args.json, TensorBoard events, history.jsonl
(one line per epoch), sample grids, checkpoints/{best,last}.pt, metrics.json and, for
z_dim == 2, vae_manifold.png.
"""
import argparse
import json
import math
import random
import signal
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

from checkpoints import (CheckpointError, check_model_fits, load_checkpoint, remove_stale_tmp, save_checkpoint,
                         write_json, write_text)
from cnn_encoder_decoder import CNNDecoder, CNNEncoder
from fmnist import DataError, fmnist
from utils import KLD, elbo_to_bpd, sample_reparameterize, visualize_manifold

PART1_DIR = Path(__file__).resolve().parent
PROG = "train_torch.py"


# Flags a resumed run may change; every other setting comes from the run being resumed.
RESUME_MAY_CHANGE = ("epochs", "device", "num_workers", "eval_batch_size", "final_iw_samples", "progress_bar",
                     "data_dir", "compile", "resume")


class UserError(Exception):
    """A mistake in what the user asked for, with a one-line message (exit status 2)."""


class NonFiniteLossError(Exception):
    """A NaN or Inf loss: training stops before anything is saved from the diverged weights."""

    def __init__(self, where, step=None):
        super().__init__(where if step is None else f"{where}, step {step}")
        self.where, self.step = where, step


class Terminated(BaseException):
    """Raised by the SIGTERM handler, like KeyboardInterrupt for SIGINT."""


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
        # Sampling, KL and cross-entropy in fp32 even under bf16 autocast: only the convs run in bf16.
        mean, log_std = mean.float(), log_std.float()
        z = sample_reparameterize(mean, torch.exp(log_std))  # [B, z_dim]
        logits = self.decoder(z).float()  # [B, 16, 28, 28]
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


def autocast(device, precision):
    """The autocast context of a precision: bf16 autocast on CPU or CUDA, or a no-op for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_vae(model, loader, optimizer, precision="fp32", grad_clip=None, check_every_step=None):
    """One epoch of training; the loss is the batch's bpd (the negative ELBO, rescaled).

    Args:
        model: a VAE (or its torch.compile wrapper); loader: yields (images, labels).
        optimizer: steps the model's parameters.
        precision: "fp32", or "bf16" for bf16 autocast of the forward pass.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        check_every_step: stop at a NaN/Inf loss in the same step (None: only on the CPU).
    Returns:
        (bpd, rec_loss, reg_loss): averages over the images seen, weighted by batch size
        (bits per dimension; nats per image; nats per image).
    Raises:
        NonFiniteLossError: at the first batch whose loss is NaN or Inf (checked every step on
        the CPU; at the end of the epoch on a GPU, where a per-step check would force a host sync,
        with the same step number reported either way).
    """
    model.train()
    totals = torch.zeros(3, device=model.device)  # batch-size-weighted sums of bpd, L_rec, L_reg
    first_bad_step = torch.full((), -1, device=model.device)  # first step with a NaN/Inf loss; -1: none
    if check_every_step is None:
        check_every_step = model.device.type == "cpu"
    num_images = 0
    for step, (imgs, _) in enumerate(loader):
        imgs = imgs.to(model.device, non_blocking=True)  # [B, 1, 28, 28]
        with autocast(model.device, precision):
            L_rec, L_reg, bpd = model(imgs)
        batch_stats = torch.stack([bpd, L_rec, L_reg]).detach()  # [3]
        first_bad_step = torch.where((first_bad_step < 0) & ~batch_stats.isfinite().all(), step, first_bad_step)
        if check_every_step and first_bad_step >= 0:
            raise NonFiniteLossError("training", step + 1)

        optimizer.zero_grad(set_to_none=True)
        bpd.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        # Accumulate on the device: no .item() per step, so no host sync.
        totals += batch_stats * imgs.shape[0]
        num_images += imgs.shape[0]
    if first_bad_step >= 0:
        raise NonFiniteLossError("training", int(first_bad_step) + 1)
    return tuple((totals / num_images).tolist())


@torch.inference_mode()
def test_vae(model, loader):
    """The ELBO of a whole split (one sample of z per image), in eval mode and in fp32.

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


def rng_states(data_order):
    """Every random state the run depends on, as tensors and plain values (loadable with weights_only)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached_gaussian": cached_gaussian},
        "python": list(random.getstate()[1]),
        "data_order": data_order.get_state(),
    }


def set_rng_states(states, data_order):
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    random.setstate((3, tuple(states["python"]), None))
    data_order.set_state(states["data_order"])


def resolve_device(name):
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA device; "
                        "use --device cpu (or auto)")
    return torch.device(name)


def configure_cuda(deterministic):
    """TF32 matmuls/convs, and cuDNN autotuning unless bitwise determinism is requested."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def build_model(args, device):
    """The VAE, its Adam optimizer, and the module the training step calls (compiled with --compile).

    Returns:
        (model, optimizer, train_model); checkpoints and evaluation use `model`.
    """
    model = VAE(num_filters=args.num_filters, z_dim=args.z_dim, lr=args.lr).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    train_model = torch.compile(model) if args.compile else model
    return model, optimizer, train_model


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


def args_to_dict(args):
    """The arguments as plain values (paths as strings): for args.json and checkpoints (weights_only)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def resumed_args(args, path):
    """The settings of the run being resumed, with the flags a resume may change taken from `args`.

    A flag the user set (a value other than its default) that contradicts the run is an error:
    a resumed run must compute exactly what the uninterrupted run would have.
    """
    state = load_checkpoint(path)
    saved, defaults = state["args"], args_to_dict(parse_args([]))
    if "z_dim" not in saved or "num_filters" not in saved:
        raise CheckpointError(f"{path} does not record the run's settings")
    requested = {name: getattr(args, name) if getattr(args, name) != defaults[name] else saved[name]
                 for name in ("z_dim", "num_filters")}
    check_model_fits(state, path, requested["z_dim"], requested["num_filters"])
    merged = dict(saved)
    for name, value in args_to_dict(args).items():
        if name == "resume" or name not in saved:
            merged[name] = value
        elif value == defaults[name] or value == saved[name]:
            continue  # not set by the user, or set to what the run already has
        elif name in RESUME_MAY_CHANGE:
            merged[name] = value
        else:
            raise UserError(f"--{name} {value} differs from the resumed run's {saved[name]}; a resumed run keeps "
                            f"its settings (only --{', --'.join(RESUME_MAY_CHANGE[:-1])} may change)")
    merged["data_dir"], merged["log_dir"] = Path(merged["data_dir"]), Path(merged["log_dir"])
    return argparse.Namespace(**merged), state


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


def read_history(history_path, before_epoch=None):
    """The per-epoch records of history.jsonl, optionally only those of epochs < before_epoch."""
    if not history_path.exists():
        return []
    records = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
    return [r for r in records if before_epoch is None or r["epoch"] < before_epoch]


def main(args):
    """Train with Adam, validate every epoch, test the best-by-validation model.

    With args.resume set, continue that run folder from the epoch after its last checkpoint.
    Returns:
        the metrics dict also written to metrics.json.
    """
    session_start = time.time()
    resume_state = None
    if args.resume:
        last_path = Path(args.resume) / "checkpoints" / "last.pt"
        if not last_path.is_file():
            raise UserError(f"--resume {args.resume}: no checkpoint at {last_path}; pass a run folder of "
                            "train_torch.py that finished at least one epoch")
        args, resume_state = resumed_args(args, last_path)
        metrics_path = Path(args.resume) / "metrics.json"
        if resume_state["epoch"] >= args.epochs and metrics_path.is_file():
            print(f"{args.resume} already finished its {args.epochs} epochs and was tested; "
                  "pass --epochs N to train it further")
            return json.loads(metrics_path.read_text())
    seed_everything(args.seed)
    device = resolve_device(args.device)
    if device.type == "cuda":
        configure_cuda(args.deterministic)
    no_bars = None if args.progress_bar is None else not args.progress_bar  # None: bars only on a terminal

    # Data: the whole 4-bit set in memory (on the GPU when training there); own generator for the shuffle.
    data_order = torch.Generator().manual_seed(args.seed)
    train_loader, val_loader, test_loader = fmnist(args.data_dir, args.batch_size, args.num_workers,
                                                   generator=data_order, eval_batch_size=args.eval_batch_size,
                                                   device=device if device.type == "cuda" else None)

    # Model and optimizer (Adam, as in the assignment); channels_last and compile only change speed.
    model, optimizer, train_model = build_model(args, device)

    # Run folder: a fresh one, or the resumed one with everything after its last checkpoint discarded.
    args_dict = args_to_dict(args)
    if resume_state is None:
        run_dir = make_run_dir(args.log_dir, args.z_dim)
        write_json(run_dir / "args.json", args_dict)
        start_epoch, best_val_bpd, best_epoch, elapsed = 1, math.inf, 0, 0.0
    else:
        run_dir = Path(args.resume).resolve()
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        set_rng_states(resume_state["rng"], data_order)
        start_epoch, best_epoch = resume_state["epoch"] + 1, resume_state["best_epoch"]
        best_val_bpd, elapsed = resume_state["best_val_bpd"], resume_state["wall_time_s"]
        remove_stale_tmp(run_dir / "checkpoints")
        history = read_history(run_dir / "history.jsonl", before_epoch=start_epoch)
        write_text(run_dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    ckpt_dir = run_dir / "checkpoints"
    # purge_step hides TensorBoard points an interrupted session logged after its last checkpoint.
    writer = SummaryWriter(run_dir, purge_step=start_epoch if resume_state else None)
    print(f"run folder: {run_dir}  |  device: {device}  |  train/val/test images: "
          f"{len(train_loader.dataset)}/{len(val_loader.dataset)}/{len(test_loader.dataset)}"
          + (f"  |  resuming at epoch {start_epoch}" if resume_state else ""))

    epoch, last_saved = start_epoch, start_epoch - 1
    try:
        if start_epoch == 1 and 0 in args.sample_epochs:
            sample_and_save(model, 0, writer)
        for epoch in tqdm(range(start_epoch, args.epochs + 1), desc="epochs", initial=start_epoch - 1,
                          total=args.epochs, disable=no_bars, dynamic_ncols=True):
            # Train one epoch, then validate (a diverged model stops the run before anything is saved).
            t0 = time.time()
            batches = tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=no_bars, dynamic_ncols=True)
            train_stats = train_vae(train_model, batches, optimizer, args.precision, args.grad_clip)
            val_stats = test_vae(model, val_loader)
            if not math.isfinite(val_stats[0]):
                raise NonFiniteLossError("validation")
            seconds = time.time() - t0

            # Log, then checkpoint: `best` on a new best validation bpd first, then `last`, so that
            # `last` never points to a best epoch whose weights were not saved.
            log_epoch(writer, run_dir / "history.jsonl", epoch, {"train": train_stats, "val": val_stats}, seconds)
            if val_stats[0] < best_val_bpd:
                best_val_bpd, best_epoch = val_stats[0], epoch
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                     "best_val_bpd": best_val_bpd, "best_epoch": best_epoch, "args": args_dict,
                     "wall_time_s": elapsed + time.time() - session_start, "rng": rng_states(data_order)}
            if best_epoch == epoch:
                save_checkpoint(ckpt_dir / "best.pt", state)
            save_checkpoint(ckpt_dir / "last.pt", state)
            last_saved = epoch

            # Sample grids on the report's schedule (on a fork of the RNG: the run's numbers do not change).
            if epoch in args.sample_epochs:
                sample_and_save(model, epoch, writer)
            tqdm.write(f"epoch {epoch:3d}/{args.epochs} | train bpd {train_stats[0]:.4f} | "
                       f"val bpd {val_stats[0]:.4f} | {seconds:.1f} s")

        # Test the best-by-validation model (the untrained one when no epoch ran).
        if best_epoch > 0:
            best = load_checkpoint(ckpt_dir / "best.pt", map_location=device)
            model.load_state_dict(best["model"])
        test_bpd, test_rec, test_reg = test_vae(model, test_loader)
        test_scalars = {"bpd": test_bpd, "rec_loss": test_rec, "kl": test_reg, "elbo": -(test_rec + test_reg)}
        iw = {}
        if args.final_iw_samples:
            # The importance-weighted bound (Burda et al. 2016): tighter than the ELBO. evaluate.py
            # imports this module, hence the import here.
            from evaluate import importance_weighted_bpd
            iw = importance_weighted_bpd(model, test_loader, args.final_iw_samples, seed=args.seed,
                                         progress=args.progress_bar)
            test_scalars["iw_bpd"] = iw["iw_bpd"]
        for name, value in test_scalars.items():
            writer.add_scalar(f"test/{name}", value, best_epoch)
        if args.z_dim == 2:
            manifold = visualize_manifold(model.decoder, grid_size=20)  # [3, H, W]
            torchvision.utils.save_image(manifold, run_dir / "vae_manifold.png")
            writer.add_image("manifold", manifold, best_epoch)
    except NonFiniteLossError as error:
        raise NonFiniteLossError(f"non-finite loss in epoch {epoch} ({error}); {ckpt_dir} holds the last finite "
                                 f"epochs: try a lower --lr or --grad_clip 1.0") from None
    except (KeyboardInterrupt, Terminated) as stop:
        signal_name = "SIGINT" if isinstance(stop, KeyboardInterrupt) else "SIGTERM"
        print(f"\n{signal_name}: {ckpt_dir / 'last.pt'} holds epoch {last_saved or 'none (nothing to resume)'}; "
              f"continue with: python {Path(sys.argv[0]).name} --resume {run_dir}", file=sys.stderr)
        raise
    finally:
        writer.close()

    history = read_history(run_dir / "history.jsonl")
    metrics = {
        "test_bpd": test_bpd, "test_rec_loss": test_rec, "test_reg_loss": test_reg,
        "best_epoch": best_epoch, "best_val_bpd": best_val_bpd if best_epoch > 0 else None,
        **({"test_iw_bpd": iw["iw_bpd"], "test_iw_bpd_se": iw["iw_bpd_se"], "test_elbo_bpd_se": iw["elbo_bpd_se"],
            "iw_samples": args.final_iw_samples} if iw else {}),
        "epochs": args.epochs, "seconds_per_epoch": float(np.mean([r["seconds"] for r in history])) if history else None,
        "wall_time_s": elapsed + time.time() - session_start, "device": str(device),
    }
    write_json(run_dir / "metrics.json", metrics)
    iw_text = f" | importance-weighted (K={args.final_iw_samples}) {iw['iw_bpd']:.4f}" if iw else ""
    print(f"test bpd {test_bpd:.4f}{iw_text} (best epoch {best_epoch}) | wall time {metrics['wall_time_s']:.0f} s | {run_dir}")
    return metrics


def int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def positive_float(text):
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
    model.add_argument("--z_dim", type=int_at_least(1), default=20, help="dimensionality of the latent space")
    model.add_argument("--num_filters", type=int_at_least(1), default=32,
                       help="channels of the first conv layers (later ones use twice as many)")

    optim = parser.add_argument_group("optimization")
    optim.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    optim.add_argument("--batch_size", type=int_at_least(1), default=128, help="images per minibatch")
    optim.add_argument("--epochs", type=int_at_least(0), default=80, help="training epochs")
    optim.add_argument("--seed", type=int, default=42, help="seed of every random number generator")
    optim.add_argument("--grad_clip", type=positive_float, default=None,
                       help="clip the global gradient norm to this value (None: no clipping)")

    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", type=Path, default=PART1_DIR.parent / "data",
                      help="folder holding FashionMNIST/raw/ (downloaded there when missing)")
    data.add_argument("--num_workers", type=int_at_least(0), default=0,
                      help="DataLoader worker processes (the data are in memory: 0 is usually fastest)")

    speed = parser.add_argument_group("speed (same model and loss; see README, Performance)")
    speed.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                       help="bf16 autocast of the convs and linear layers (sampling, KL and cross-entropy stay fp32); "
                            "an order of magnitude slower on CPUs without native bf16 (AVX2 only), see README")
    speed.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                       help="channels_last memory format for the model")
    speed.add_argument("--compile", action="store_true", help="torch.compile the training step's model")
    speed.add_argument("--deterministic", action="store_true",
                       help="bitwise-reproducible CUDA runs (no cuDNN autotuning); CPU runs are always reproducible")

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval_batch_size", type=int_at_least(1), default=512,
                            help="images per validation/test batch")
    evaluation.add_argument("--final_iw_samples", type=int_at_least(0), default=100,
                            help="K of the importance-weighted test bpd computed after training (0: skip it)")

    logging = parser.add_argument_group("logging")
    logging.add_argument("--log_dir", type=Path, default=PART1_DIR / "VAE_logs",
                         help="each run gets a fresh timestamped folder in here")
    logging.add_argument("--sample_epochs", type=int_at_least(0), nargs="*", default=[0, 10, 80],
                         help="epochs after which an 8x8 sample grid is saved (0: before training)")
    logging.add_argument("--progress_bar", action=argparse.BooleanOptionalAction, default=None,
                         help="tqdm progress bars over epochs and batches (None: only when stderr is a terminal)")
    logging.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                         help="continue this run folder from its checkpoints/last.pt, with its settings")

    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                          help="where to train; auto = CUDA when available")
    return parser.parse_args(argv)


def _raise_terminated(signum, frame):
    raise Terminated()


def cli(argv=None):
    """Parse arguments, run main, and turn every expected failure into one line and an exit status:
    2 bad input, 1 diverged (non-finite loss), 130 SIGINT, 143 SIGTERM."""
    args = parse_args(argv)
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        main(args)
    except (DataError, UserError, CheckpointError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Terminated:
        sys.exit(143)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


if __name__ == "__main__":
    # evaluate.py (used after training) imports train_torch: let it find this module instead of
    # loading a second copy, whose exception classes the handlers in cli() would not catch.
    sys.modules.setdefault("train_torch", sys.modules[__name__])
    cli()
