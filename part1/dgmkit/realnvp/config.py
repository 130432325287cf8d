"""RealNVP's settings (train_realnvp.py): a RunConfig (engine/settings.py: the flags every family shares, with the
VAE's names and meanings) plus the flow's own flags. Defaults: the 2019 setting, 8-bit MNIST, in fp32 (a flow's
log-determinants are not checked in bf16 here: --precision bf16 or auto is refused in one line).
"""
import dataclasses
from typing import ClassVar

from dgmkit.cli.args import ArgumentParser, int_at_least, positive_float
from dgmkit.engine.settings import PART1_DIR, RunConfig, add_optimization_flags, add_run_flags, fp32_only

REALNVP_SCRIPT = PART1_DIR / "train_realnvp.py"


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
        fp32_only(parser, args, "RealNVP")

    def run_stem(self):
        return "realnvp"
