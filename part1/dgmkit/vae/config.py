"""The VAE's training settings: one grouped argparse block that builds a frozen TrainConfig, shared by
train_torch.py (its CLI), benchmark.py (option combinations), the sweep (grid points) and the report (commands
rebuilt from args.json). The flags every family shares, and what they mean, are run_config's.
"""
import dataclasses
from typing import ClassVar

from dgmkit.cli.args import ArgumentParser, int_at_least, run_name_type
from dgmkit.engine.settings import PART1_DIR, REPO_ROOT, RunConfig, add_optimization_flags, add_run_flags, find_data_dir
from dgmkit.vae.bounds import OBJECTIVES
from dgmkit.vae.model import FLOW_KINDS

TRAIN_SCRIPT = PART1_DIR / "train_torch.py"
DESCRIPTION = ("Train a VAE on MNIST or FashionMNIST quantized to B bits (default: the assignment's 4-bit "
               "FashionMNIST); report the negative ELBO in bits per dimension.")
__all__ = ["TrainConfig", "build_parser", "parse_train_args", "defaults", "find_data_dir", "run_name_type", "PART1_DIR",
           "REPO_ROOT", "TRAIN_SCRIPT"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(RunConfig):
    """The VAE's settings: RunConfig's and these, one field per flag of build_parser."""
    SCRIPT: ClassVar = TRAIN_SCRIPT
    REQUIRED: ClassVar = ("z_dim", "num_filters")
    SHAPE_KEYS: ClassVar = ("z_dim", "num_filters", "flow", "flow_length", "bits")
    SHAPE_DEFAULTS: ClassVar = {"flow": "none", "flow_length": 0, "bits": 4}  # checkpoints from before them
    # model
    z_dim: int
    num_filters: int
    flow: str
    flow_length: int
    # optimization
    objective: str
    train_samples: int
    # evaluation
    final_iw_samples: int

    @classmethod
    def build_parser(cls, prog=None):
        return build_parser(prog or TRAIN_SCRIPT.name)

    @classmethod
    def validate(cls, parser, args):
        if args.flow == "none" and args.flow_length > 0 and args.resume is None:
            parser.error(f"--flow_length {args.flow_length} needs --flow planar or --flow radial")

    def run_stem(self):
        return f"z{self.z_dim}"


def build_parser(prog="train_torch.py"):
    parser = ArgumentParser(prog=prog, description=DESCRIPTION)
    model = parser.add_argument_group("model")
    model.add_argument("--z_dim", type=int_at_least(1), default=20, help="dimensionality of the latent space")
    model.add_argument("--num_filters", type=int_at_least(1), default=32,
                       help="channels of the first conv layers (later ones use twice as many)")
    model.add_argument("--flow", choices=FLOW_KINDS, default="none",
                       help="posterior q(z|x): a diagonal Gaussian pushed through amortized planar or radial flows")
    model.add_argument("--flow_length", type=int_at_least(0), default=0,
                       help="number of flow layers (0: the plain diagonal Gaussian; needs --flow)")

    optim = parser.add_argument_group("optimization")
    optim.add_argument("--objective", choices=OBJECTIVES, default="elbo",
                       help="elbo: mean of K single-sample ELBOs; iwae: the K-sample importance-weighted bound")
    optim.add_argument("--train_samples", type=int_at_least(1), default=1, metavar="K",
                       help="K, samples of z per image in the training objective")
    add_optimization_flags(optim)

    evaluation = add_run_flags(parser, log_dir=PART1_DIR / "VAE_logs", stem="z<z_dim>", sample_epochs=(0, 10, 80),
                               help_tail="; the decoder emits L logits per pixel (B = 1: binarized, a Bernoulli "
                                         "per pixel)")
    evaluation.add_argument("--final_iw_samples", type=int_at_least(0), default=100,
                            help="K of the importance-weighted test bpd computed after training (0: skip it)")
    return parser


def parse_train_args(argv=None, prog="train_torch.py"):
    """The TrainConfig of a command line (RunConfig.parse: `given` holds the flags typed there)."""
    return TrainConfig.parse(argv, prog)


def defaults():
    """Every VAE setting's default, as TrainConfig.to_dict gives it."""
    return TrainConfig.defaults()

