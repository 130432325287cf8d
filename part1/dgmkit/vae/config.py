"""The VAE's training settings: a frozen TrainConfig whose fields declare their flags (engine/settings.py builds the
parser from them), shared by train_torch.py (its CLI), benchmark.py (option combinations), the sweep (grid points)
and the report (commands rebuilt from args.json). The flags every family shares, and what they mean, are
RunConfig's; the common defaults are the VAE's.
"""
import dataclasses
from typing import ClassVar

from dgmkit.cli.args import int_at_least
from dgmkit.engine.settings import RunConfig, flag
from dgmkit.places import PART1_DIR
from dgmkit.vae.bounds import OBJECTIVES
from dgmkit.vae.model import FLOW_KINDS

TRAIN_SCRIPT = PART1_DIR / "train_torch.py"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(RunConfig):
    """The VAE's settings: RunConfig's and these, each declared with its flag."""
    SCRIPT: ClassVar = TRAIN_SCRIPT
    DESCRIPTION: ClassVar = ("Train a VAE on MNIST or FashionMNIST quantized to B bits (default: the assignment's "
                             "4-bit FashionMNIST); report the negative ELBO in bits per dimension.")
    REQUIRED: ClassVar = ("z_dim", "num_filters")
    SHAPE_KEYS: ClassVar = ("z_dim", "num_filters", "flow", "flow_length", "bits")
    SHAPE_DEFAULTS: ClassVar = {"flow": "none", "flow_length": 0, "bits": 4}  # checkpoints from before them
    HELP: ClassVar = {"stem": "z<z_dim>",
                      "bits_tail": "; the decoder emits L logits per pixel (B = 1: binarized, a Bernoulli per pixel)"}
    # model
    z_dim: int = flag("model", "dimensionality of the latent space", 20, type=int_at_least(1))
    num_filters: int = flag("model", "channels of the first conv layers (later ones use twice as many)", 32,
                            type=int_at_least(1))
    flow: str = flag("model", "posterior q(z|x): a diagonal Gaussian pushed through amortized planar or radial flows",
                     "none", choices=FLOW_KINDS)
    flow_length: int = flag("model", "number of flow layers (0: the plain diagonal Gaussian; needs --flow)", 0,
                            type=int_at_least(0))
    # optimization
    objective: str = flag("optimization", "elbo: mean of K single-sample ELBOs; iwae: the K-sample importance-weighted "
                          "bound", "elbo", choices=OBJECTIVES)
    train_samples: int = flag("optimization", "K, samples of z per image in the training objective", 1,
                              type=int_at_least(1), metavar="K")
    # evaluation
    final_iw_samples: int = flag("evaluation", "K of the importance-weighted test bpd computed after training (0: skip "
                                 "it)", 100, type=int_at_least(0))

    @classmethod
    def validate(cls, parser, args):
        if args.flow == "none" and args.flow_length > 0 and args.resume is None:
            parser.error(f"--flow_length {args.flow_length} needs --flow planar or --flow radial")

    def run_stem(self):
        return f"z{self.z_dim}"


def build_parser(prog="train_torch.py"):
    """train_torch.py's parser (TrainConfig.build_parser)."""
    return TrainConfig.build_parser(prog)


def parse_train_args(argv=None, prog="train_torch.py"):
    """The TrainConfig of a command line (RunConfig.parse: `given` holds the flags typed there)."""
    return TrainConfig.parse(argv, prog)


def defaults():
    """Every VAE setting's default, as TrainConfig.to_dict gives it."""
    return TrainConfig.defaults()
