"""The VAE's training and evaluation loops (train_vae on engine/epoch.py's train_epoch, test_vae), its sample grid,
and building it for training: the memory check, Adam, the compiled loss (no file I/O).

Each loop returns a dict of named statistics (averages over the images seen); its keys flow unchanged
into history.jsonl, TensorBoard and metrics.json: "bpd" (negative ELBO, bits per dimension),
"rec_nats" and "kl_nats" (nats per image), and, in training, "objective_bpd" (the loss minimised).
"""
import torch
import torchvision

from dgmkit.contexts import eval_mode
from dgmkit.engine import memory
from dgmkit.engine.epoch import CompiledOrEager, train_epoch
from dgmkit.vae.bounds import objective
from dgmkit.vae.model import VAE

STATS = ("bpd", "rec_nats", "kl_nats")


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
    the global RNG (callers fork it: engine/loop.py's save_samples, train_torch.sample_and_save)."""
    with eval_mode(model):
        samples = model.sample(batch_size)  # [64, 1, 28, 28] in 0..L-1
    return torchvision.utils.make_grid(samples.float().cpu() / (model.levels - 1), nrow=8)  # [3, H, W] in [0, 1]


SIZE_FLAGS = ("z_dim", "num_filters", "flow_length")  # the settings that size the VAE's parameters


def check_fits(num_filters, z_dim, flow, flow_length, device, levels=16):
    """A one-line UserError when the parameters alone (with gradients and Adam's two moments) would not fit in the
    device's memory; counted on the meta device, so nothing is allocated (engine/memory.py's check_fits)."""
    return memory.check_fits(lambda: VAE(num_filters, z_dim, 0.0, flow, flow_length, levels), device, SIZE_FLAGS)


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
