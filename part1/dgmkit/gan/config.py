"""The GAN's settings (train_gan.py): a RunConfig (engine/settings.py: the flags every family shares, with the
VAE's names and meanings) plus the GAN's own flags. Defaults: the 2019 setting, 8-bit MNIST, in fp32 (the losses are
not checked in bf16 here: --precision bf16 or auto is refused in one line).
"""
import dataclasses
from typing import ClassVar

from dgmkit.cli.args import ArgumentParser, int_at_least, positive_float
from dgmkit.engine.settings import PART1_DIR, RunConfig, add_optimization_flags, add_run_flags, fp32_only

GAN_SCRIPT = PART1_DIR / "train_gan.py"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GANConfig(RunConfig):
    """The GAN's settings: RunConfig's and these, one field per flag of its parser."""
    SCRIPT: ClassVar = GAN_SCRIPT
    REQUIRED: ClassVar = ("latent_dim",)
    SHAPE_KEYS: ClassVar = ("latent_dim",)
    # model
    latent_dim: int
    # optimization
    beta1: float

    @classmethod
    def build_parser(cls, prog=None):
        parser = ArgumentParser(prog=prog or GAN_SCRIPT.name, description=(
            "Train the 2019 assignment's GAN (Goodfellow et al. 2014; MLP generator and discriminator, the "
            "non-saturating generator loss) on MNIST or FashionMNIST (default: 8-bit MNIST, scaled to [-1, 1])."))
        model = parser.add_argument_group("model")
        model.add_argument("--latent_dim", type=int_at_least(1), default=100, help="dimensionality of z ~ N(0, I)")
        optim = parser.add_argument_group("optimization")
        optim.add_argument("--beta1", type=positive_float, default=0.5, help="Adam's beta1 for both players")
        add_optimization_flags(optim, lr=2e-4, batch_size=64, epochs=200)
        add_run_flags(parser, log_dir=PART1_DIR / "GAN_logs", stem="gan", sample_epochs=(0, 100, 200), dataset="mnist",
                      bits=8, precision="fp32", compile="off", help_tail="; the networks see level / (L-1) * 2 - 1")
        return parser

    @classmethod
    def validate(cls, parser, args):
        fp32_only(parser, args, "the GAN")
        if args.grad_clip is not None:
            parser.error("--grad_clip: the GAN's steps do not clip gradients; drop the flag")
        if args.compile != "off":
            parser.error(f"--compile {args.compile}: the GAN trains eagerly (its MLPs gain little); drop the flag")
        if args.batch_size < 2:
            parser.error("--batch_size must be at least 2 for the generator's batch norm")

    def run_stem(self):
        return "gan"
