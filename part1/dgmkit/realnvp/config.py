"""RealNVP's settings (train_realnvp.py): a RunConfig (engine/settings.py: the flags every family shares, with the
VAE's names and meanings) plus the flow's own flags, each declared with its field. Defaults: the 2019 setting, 8-bit
MNIST, in fp32 (a flow's log-determinants are not checked in bf16 here: --precision bf16 or auto is refused in one
line).
"""
import dataclasses
from typing import ClassVar

from dgmkit.cli.args import float_between, int_at_least
from dgmkit.engine.settings import RunConfig, flag, fp32_only
from dgmkit.places import PART1_DIR

REALNVP_SCRIPT = PART1_DIR / "train_realnvp.py"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RealNVPConfig(RunConfig):
    """RealNVP's settings: RunConfig's and these, each declared with its flag."""
    SCRIPT: ClassVar = REALNVP_SCRIPT
    DESCRIPTION: ClassVar = (
        "Train a RealNVP flow (Dinh et al. 2017) on MNIST or FashionMNIST quantized to B bits (default: the 2019 "
        "assignment's 8-bit MNIST); report the dequantization bound on -log P(x) in bits per dimension, "
        "comparable with the VAE's bpd on the same data.")
    REQUIRED: ClassVar = ("hidden_channels", "num_blocks")
    SHAPE_KEYS: ClassVar = ("hidden_channels", "num_blocks", "num_scales", "couplings", "bits")
    DEFAULTS: ClassVar = {"batch_size": 64, "epochs": 40, "dataset": "mnist", "bits": 8, "precision": "fp32",
                          "log_dir": PART1_DIR / "RealNVP_logs", "sample_epochs": (0, 20, 40)}
    HELP: ClassVar = {"stem": "realnvp",
                      "bits_tail": "; the flow models (x + u) / L, u ~ U[0,1)^D (uniform dequantization)"}
    HELP_OF: ClassVar = {
        "dataset": "mnist (the 2019 assignment, 8-bit: --bits 8, the default) or fashion_mnist (the VAE's 2021 "
                   "data: --bits 4 compares with its bpd)",
        "precision": "fp32 only: a flow's log-determinants are not checked in bf16 here (auto or bf16 is refused)"}
    # model
    hidden_channels: int = flag("model", "channels of every coupling's s/t conv net", 32, type=int_at_least(1))
    num_blocks: int = flag("model", "residual blocks of every coupling's s/t conv net", 2, type=int_at_least(1))
    num_scales: int = flag("model", "scales (checkerboard couplings, squeeze, channel couplings, factor out half)", 2,
                           type=int_at_least(1, 2))
    couplings: int = flag("model", "couplings per mask type and scale (the paper's 3)", 3, type=int_at_least(1))
    # evaluation
    final_draws: int = flag("evaluation", "dequantization noise draws per test image for the test bound (its SE over "
                            "images is reported)", 10, type=int_at_least(1))
    temperature: float = flag("evaluation", "sample grids draw z ~ N(0, T^2 I), 0 < T <= 100 (the paper's grids: T "
                              "<= 1; far above 1 the pixels saturate at 0 or L-1)", 1.0,
                              type=float_between(0, 100, low_open=True))

    @classmethod
    def validate(cls, parser, args):
        fp32_only(parser, args, "RealNVP")

    def run_stem(self):
        return "realnvp"
