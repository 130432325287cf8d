"""The GAN's settings (train_gan.py): a RunConfig (engine/settings.py: the flags every family shares, with the
VAE's names and meanings) plus the GAN's own flags, each declared with its field. Defaults: the 2019 setting, 8-bit
MNIST, in fp32 (the losses are not checked in bf16 here: --precision bf16 or auto is refused in one line).
"""
import dataclasses
from typing import ClassVar

from dgmkit.cli.args import float_between, int_at_least
from dgmkit.engine.settings import RunConfig, flag, fp32_only
from dgmkit.places import PART1_DIR

GAN_SCRIPT = PART1_DIR / "train_gan.py"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GANConfig(RunConfig):
    """The GAN's settings: RunConfig's and these, each declared with its flag."""
    SCRIPT: ClassVar = GAN_SCRIPT
    DESCRIPTION: ClassVar = (
        "Train the 2019 assignment's GAN (Goodfellow et al. 2014; MLP generator and discriminator, the "
        "non-saturating generator loss) on MNIST or FashionMNIST (default: 8-bit MNIST, scaled to [-1, 1]).")
    REQUIRED: ClassVar = ("latent_dim",)
    SHAPE_KEYS: ClassVar = ("latent_dim",)
    DEFAULTS: ClassVar = {"lr": 2e-4, "batch_size": 64, "epochs": 200, "dataset": "mnist", "bits": 8,
                          "precision": "fp32", "compile": "off", "log_dir": PART1_DIR / "GAN_logs",
                          "sample_epochs": (0, 100, 200)}
    HELP: ClassVar = {"stem": "gan", "bits_tail": "; the networks see level / (L-1) * 2 - 1"}
    HELP_OF: ClassVar = {
        "dataset": "mnist (the 2019 assignment, 8-bit: --bits 8, the default) or fashion_mnist",
        "lr": "Adam learning rate of both players",
        "grad_clip": "not for the GAN: its steps do not clip gradients (any value is refused)",
        "precision": "fp32 only: the GAN's losses are not checked in bf16 here (auto or bf16 is refused)",
        "compile": "off only: the GAN trains eagerly, its MLPs gain little from compiling (auto or on is refused)",
        "eval_batch_size": "not used by the GAN (it has no validation or test batches)"}
    # model
    latent_dim: int = flag("model", "dimensionality of z ~ N(0, I)", 100, type=int_at_least(1))
    # optimization
    beta1: float = flag("optimization", "Adam's beta1 for both players, in [0, 1)", 0.5,
                        type=float_between(0, 1, high_open=True))
    batch_size: int = flag("optimization", "images per minibatch (at least 2, for the generator's batch norm; a last "
                           "batch of one image is left out of its epoch)", 64, type=int_at_least(2))

    @classmethod
    def validate(cls, parser, args):
        fp32_only(parser, args, "the GAN")
        if args.grad_clip is not None:
            parser.error("--grad_clip: the GAN's steps do not clip gradients; drop the flag")
        if args.compile != "off":
            parser.error(f"--compile {args.compile}: the GAN trains eagerly (its MLPs gain little); drop the flag")

    def run_stem(self):
        return "gan"
