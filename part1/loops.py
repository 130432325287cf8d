"""The training and evaluation loops, sample grids, and building a model for training (no file I/O).

Each loop returns a dict of named statistics (averages over the images seen); its keys flow unchanged
into history.jsonl, TensorBoard and metrics.json: "bpd" (negative ELBO, bits per dimension),
"rec_nats" and "kl_nats" (nats per image), and, in training, "objective_bpd" (the loss minimised).
"""
import os
import sys

import torch
import torchvision

from cli_common import NonFiniteLossError, UserError, first_line  # noqa: F401  (loops.NonFiniteLossError)
from model import VAE, eval_mode, objective

STATS = ("bpd", "rec_nats", "kl_nats")


def autocast(device, precision):
    """The autocast context of a precision: bf16 autocast on CPU or CUDA, or a no-op for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class CompiledOrEager:
    """fn compiled with torch.compile; if compiling fails, one line on stderr and fn runs eagerly from then on.

    A failure on the first call restores the CPU random state, so the eager retry draws the same noise.
    """

    def __init__(self, fn, mode=None):
        self.fn, self.compiled, self.calls = fn, torch.compile(fn, mode=mode), 0

    def __call__(self, *args):
        if self.compiled is None:
            return self.fn(*args)
        state = torch.get_rng_state() if self.calls == 0 else None
        try:
            result = self.compiled(*args)
        except (RuntimeError, OSError, ImportError, AssertionError, TypeError, ValueError) as error:
            print(f"warning: torch.compile failed ({first_line(error)[:160]}); continuing without compilation",
                  file=sys.stderr)
            self.compiled = None
            if state is not None:
                torch.set_rng_state(state)
            return self.fn(*args)
        self.calls += 1
        return result


def train_vae(model, loader, optimizer, precision="fp32", grad_clip=None, check_every_step=None,
              objective_name="elbo", train_samples=1, loss_fn=None):
    """One epoch of training on the objective (the ELBO by default, as in the assignment).

    Args:
        model: a VAE; loader: yields (images, labels); optimizer: steps the model's parameters.
        precision: "fp32", or "bf16" for bf16 autocast of the forward pass.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        check_every_step: stop at a NaN/Inf loss in the same step (None: only on the CPU).
        objective_name, train_samples: the objective and its K (model.objective).
        loss_fn: imgs -> objective dict, e.g. a compiled one (None: model.objective eagerly).
    Returns:
        dict of floats, averages over the images seen: "objective_bpd", "bpd", "rec_nats", "kl_nats".
    Raises:
        NonFiniteLossError: see train_epoch.
    """
    loss_fn = loss_fn or (lambda imgs: objective(model, imgs, objective_name, train_samples))
    # The loss in bpd: nats / (784 ln 2), as the assignment minimises.
    return train_epoch(model, loader, optimizer, loss_fn, ("objective_bpd",) + STATS, precision, grad_clip,
                       check_every_step)


def train_epoch(model, loader, optimizer, loss_fn, names, precision="fp32", grad_clip=None, check_every_step=None):
    """One epoch of any model trained by one optimizer on a loss: the loop of train_vae and of RealNVP.

    Args:
        loss_fn: imgs [B, 1, 28, 28] -> dict of scalar tensors holding `names`; names[0] is backpropagated.
        precision, grad_clip, check_every_step: as train_vae's.
    Returns:
        dict of floats: the `names`, averages over the images seen (batch-size-weighted, summed on the device).
    Raises:
        NonFiniteLossError: at the first batch whose statistics are NaN or Inf (checked every step on the CPU;
        at the end of the epoch on a GPU, where a per-step check would force a host sync, with the same
        step number reported either way).
    """
    model.train()
    totals = torch.zeros(len(names), device=model.device)  # batch-size-weighted sums
    first_bad_step = torch.full((), -1, device=model.device)  # first step with a NaN/Inf loss; -1: none
    if check_every_step is None:
        check_every_step = model.device.type == "cpu"
    num_images = 0
    for step, (imgs, _) in enumerate(loader):
        imgs = imgs.to(model.device, non_blocking=True)  # [B, 1, 28, 28]
        with autocast(model.device, precision):
            terms = loss_fn(imgs)
        batch_stats = torch.stack([terms[name] for name in names]).detach()  # [len(names)]
        first_bad_step = torch.where((first_bad_step < 0) & ~batch_stats.isfinite().all(), step, first_bad_step)
        if check_every_step and first_bad_step >= 0:
            raise NonFiniteLossError("training", step + 1)

        optimizer.zero_grad(set_to_none=True)
        terms[names[0]].backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        # Accumulate on the device: no .item() per step, so no host sync.
        totals += batch_stats * imgs.shape[0]
        num_images += imgs.shape[0]
    if first_bad_step >= 0:
        raise NonFiniteLossError("training", int(first_bad_step) + 1)
    return dict(zip(names, (totals / num_images).tolist()))


@torch.inference_mode()
def test_vae(model, loader):
    """The ELBO of a whole split (one sample of z per image), in eval mode and in fp32.

    Returns:
        dict of floats, dataset averages weighted by batch size: "bpd", "rec_nats", "kl_nats".
    """
    with eval_mode(model):
        totals = torch.zeros(len(STATS), device=model.device)
        num_images = 0
        for imgs, _ in loader:
            imgs = imgs.to(model.device, non_blocking=True)
            L_rec, L_reg, bpd = model(imgs)
            totals += torch.stack([bpd, L_rec, L_reg]) * imgs.shape[0]
            num_images += imgs.shape[0]
    return dict(zip(STATS, (totals / num_images).tolist()))


@torch.no_grad()
def sample_grid(model, batch_size=64):
    """An 8-column grid of `batch_size` samples, [3, H, W] in [0, 1] (level / (L - 1)), drawn in eval mode from
    the global RNG (callers fork it: trainer.save_samples, train_torch.sample_and_save)."""
    with eval_mode(model):
        samples = model.sample(batch_size)  # [64, 1, 28, 28] in 0..L-1
    return torchvision.utils.make_grid(samples.float().cpu() / (model.levels - 1), nrow=8)  # [3, H, W] in [0, 1]


def _memory_bytes(device):
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(num_filters, z_dim, flow, flow_length, device, levels=16):
    """A one-line UserError when the parameters alone (with gradients and Adam's two moments: 4 copies in
    fp32) would not fit in the device's memory; counted on the meta device, so nothing is allocated."""
    with torch.device("meta"):
        count = sum(p.numel() for p in VAE(num_filters, z_dim, 0.0, flow, flow_length, levels).parameters())
    need, have = 16 * count, _memory_bytes(device)
    if need > have:
        raise UserError(f"the model does not fit: {count:,} parameters need about {need / 2**30:,.0f} GiB for "
                        f"weights, gradients and Adam state, and the {device.type} has {have / 2**30:,.0f} GiB; "
                        "lower --z_dim or --num_filters")


def build_model(settings, device, choice):
    """The VAE, its Adam optimizer, and the training loss function (compiled when chosen).

    Args:
        settings: a namespace with num_filters, z_dim, lr, flow, flow_length, objective, train_samples, bits.
        choice: the resolved speed choices (hardware.choose), a dict with "compile" and "channels_last" (bools).
    Returns:
        (model, optimizer, loss_fn); checkpoints and evaluation use `model`.
    """
    levels = 2 ** settings.bits
    check_fits(settings.num_filters, settings.z_dim, settings.flow, settings.flow_length, device, levels)
    model = VAE(settings.num_filters, settings.z_dim, settings.lr, settings.flow, settings.flow_length, levels).to(device)
    if choice["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)

    def loss_fn(imgs):
        return objective(model, imgs, settings.objective, settings.train_samples)
    return model, optimizer, CompiledOrEager(loss_fn) if choice["compile"] else loss_fn
