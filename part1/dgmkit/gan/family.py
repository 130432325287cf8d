"""The GAN as a model family of the training engine (engine/loop.py's fit): its build (both players, an Adam each,
one epoch of alternating steps), sample grid, test phase (the interpolation between two noise vectors whose images
resemble different digits, and the last epoch's statistics), its last line and its TensorBoard. No validation.
"""
import torch
import torchvision

from dgmkit.contexts import forked_rng
from dgmkit.engine import memory
from dgmkit.engine.board import Board, lines
from dgmkit.engine.loop import Family
from dgmkit.errors import NonFiniteLossError
from dgmkit.gan import model as gan
from dgmkit.gan.config import GAN_SCRIPT

STATS = ("d_loss", "g_loss", "d_real", "d_fake")


SIZE_FLAGS = ("latent_dim",)  # the setting that sizes the GAN's parameters (its MLPs are otherwise fixed)


def build(config, device, choice):
    """The GAN (once engine/memory.py's check says both players fit), one Adam optimizer per player (saved and
    restored together), and one epoch of training: per batch one discriminator step, then one generator step
    (gan.train_epoch)."""
    memory.check_fits(lambda: gan.GAN(config.latent_dim, 2 ** config.bits), device, SIZE_FLAGS)
    model, optimizer_g, optimizer_d = gan.build(config.latent_dim, 2 ** config.bits, config.lr, (config.beta1, 0.999),
                                                device)

    def train_epoch(batches):
        try:
            return gan.train_epoch(model, batches, optimizer_g, optimizer_d)
        except FloatingPointError as error:
            raise NonFiniteLossError(f"training: {error}") from None
    return model, {"generator": optimizer_g, "discriminator": optimizer_d}, train_epoch


def sample_grid(model, config=None, count=64):
    """An 8x8 grid of generated images, [3, H, W] in [0, 1]."""
    images = model.sample(count).float() / (model.levels - 1)  # [64, 1, 28, 28]
    return torchvision.utils.make_grid(images.cpu(), nrow=8)


def nearest_labels(images, reference_images, reference_labels):
    """The label of each image's nearest reference image (Euclidean, in levels): a classifier without training,
    enough to tell which digit a sample resembles. images [N, 1, 28, 28], reference [M, 1, 28, 28] -> [N]."""
    distances = torch.cdist(images.flatten(1).float(), reference_images.flatten(1).float())  # [N, M]
    return reference_labels[distances.argmin(dim=1)]


def test_phase(run, model, writer, best_epoch):
    """The final model: interpolation.png, 7 steps between two noise vectors whose images resemble different
    digits (by nearest_labels against the training images; 9 images with the ends, the 2019 question), and the
    last epoch's statistics as final_<name>."""
    with forked_rng(model.device, seed=run.config.seed):
        z = model.sample_z(64)  # [64, latent_dim]
        train = run.loaders[0].dataset
        labels = nearest_labels(model.generate(z), train.images, train.labels)  # [64]
        other = int((labels != labels[0]).nonzero()[0]) if (labels != labels[0]).any() else 1
        path = model.interpolate(z[0], z[other], steps=7).float() / (model.levels - 1)  # [9, 1, 28, 28]
    grid = torchvision.utils.make_grid(path.cpu(), nrow=9)  # [3, H, W]
    run.dir.save_figure("interpolation", grid)
    writer.add_image("interpolation", grid, run.config.epochs)
    last = run.dir.read_history()[-1] if run.config.epochs else {}
    metrics = {f"final_{name}": last[f"train_{name}"] for name in STATS if f"train_{name}" in last}
    metrics["interpolation_labels"] = [int(labels[0]), int(labels[other])]
    return metrics


def summary(metrics):
    if "final_d_real" not in metrics:
        return "no epoch trained"
    return (f"last epoch: D(x) {metrics['final_d_real']:.3f} | D(G(z)) {metrics['final_d_fake']:.3f} | "
            f"d_loss {metrics['final_d_loss']:.4f} | g_loss {metrics['final_g_loss']:.4f}")


BOARD = Board("gan", {
    "GAN": {"losses (-log D(x) - log(1 - D(G(z))); -log D(G(z)))": lines("gan/d_loss_train", "gan/g_loss_train"),
            "D(x) and D(G(z))": lines("gan/d_real_train", "gan/d_fake_train")},
}, ("dataset", "bits", "latent_dim", "lr", "beta1", "batch_size", "epochs", "seed"),
    ("final_d_loss", "final_g_loss", "final_d_real", "final_d_fake", "seconds_per_epoch"))
GAN_FAMILY = Family(script=GAN_SCRIPT, build=build, validate=None, sample_grid=sample_grid, test=test_phase,
                    shown=STATS, summary=summary, board=BOARD,
                    divergence_hint="try a lower --lr or --beta1")  # the GAN's steps do not clip (no --grad_clip)
