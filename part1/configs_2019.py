"""The settings of the 2019 assignment's other two models: RealNVP (train_realnvp.py) and the GAN (train_gan.py).

Each is a RunConfig (run_config.py: the flags every family shares, with the VAE's names and meanings) plus the
model's own flags. Both default to the 2019 setting, 8-bit MNIST, and train in fp32: a flow's log-determinants
and the GAN's losses are not checked in bf16 here (--precision bf16 or auto is refused in one line).
"""
import dataclasses
from typing import ClassVar

from cli_common import ArgumentParser, int_at_least, positive_float
from run_config import PART1_DIR, RunConfig, add_optimization_flags, add_run_flags

REALNVP_SCRIPT = PART1_DIR / "train_realnvp.py"
GAN_SCRIPT = PART1_DIR / "train_gan.py"


def _fp32_only(parser, args, what):
    if args.precision != "fp32":
        parser.error(f"--precision {args.precision}: {what} trains in fp32 only; drop the flag")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RealNVPConfig(RunConfig):
    """RealNVP's settings: RunConfig's and these, one field per flag of its parser."""
    SCRIPT: ClassVar = REALNVP_SCRIPT
    REQUIRED: ClassVar = ("hidden_channels", "num_blocks")
    SHAPE_KEYS: ClassVar = ("hidden_channels", "num_blocks", "num_scales", "couplings", "bits")
    # model
    hidden_channels: int
    num_blocks: int
    num_scales: int
    couplings: int
    # evaluation
    final_draws: int
    temperature: float

    @classmethod
    def build_parser(cls, prog=None):
        parser = ArgumentParser(prog=prog or REALNVP_SCRIPT.name, description=(
            "Train a RealNVP flow (Dinh et al. 2017) on MNIST or FashionMNIST quantized to B bits (default: the 2019 "
            "assignment's 8-bit MNIST); report the dequantization bound on -log P(x) in bits per dimension, "
            "comparable with the VAE's bpd on the same data."))
        model = parser.add_argument_group("model")
        model.add_argument("--hidden_channels", type=int_at_least(1), default=32,
                           help="channels of every coupling's s/t conv net")
        model.add_argument("--num_blocks", type=int_at_least(1), default=2,
                           help="residual blocks of every coupling's s/t conv net")
        model.add_argument("--num_scales", type=int_at_least(1, 2), default=2,
                           help="scales (checkerboard couplings, squeeze, channel couplings, factor out half)")
        model.add_argument("--couplings", type=int_at_least(1), default=3,
                           help="couplings per mask type and scale (the paper's 3)")
        add_optimization_flags(parser.add_argument_group("optimization"), lr=1e-3, batch_size=64, epochs=40)
        evaluation = add_run_flags(parser, log_dir=PART1_DIR / "RealNVP_logs", stem="realnvp",
                                   sample_epochs=(0, 20, 40), dataset="mnist", bits=8, precision="fp32", help_tail=(
                                       "; the flow models (x + u) / L, u ~ U[0,1)^D (uniform dequantization)"))
        evaluation.add_argument("--final_draws", type=int_at_least(1), default=10,
                                help="dequantization noise draws per test image for the test bound (its SE over "
                                     "images is reported)")
        evaluation.add_argument("--temperature", type=positive_float, default=1.0,
                                help="sample grids draw z ~ N(0, T^2 I)")
        return parser

    @classmethod
    def validate(cls, parser, args):
        _fp32_only(parser, args, "RealNVP")

    def run_stem(self):
        return "realnvp"


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
        _fp32_only(parser, args, "the GAN")
        if args.grad_clip is not None:
            parser.error("--grad_clip: the GAN's steps do not clip gradients; drop the flag")
        if args.compile != "off":
            parser.error(f"--compile {args.compile}: the GAN trains eagerly (its MLPs gain little); drop the flag")
        if args.batch_size < 2:
            parser.error("--batch_size must be at least 2 for the generator's batch norm")

    def run_stem(self):
        return "gan"
