"""The training run's settings: one grouped argparse block that builds a frozen TrainConfig, shared by
train_torch.py (its CLI), benchmark.py (option combinations), the sweep (grid points) and the report (commands
rebuilt from args.json).
"""
import argparse
import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Optional

from cli_common import ArgumentParser, UserError, int_at_least, positive_float, seed_type
from dataset import BITS, DATASETS
from model import FLOW_KINDS, OBJECTIVES

PART1_DIR = Path(__file__).resolve().parent
REPO_ROOT = PART1_DIR.parent
TRAIN_SCRIPT = PART1_DIR / "train_torch.py"
DESCRIPTION = ("Train a VAE on MNIST or FashionMNIST quantized to B bits (default: the assignment's 4-bit FashionMNIST); "
               "report the negative ELBO in bits per dimension.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run, one field per flag of build_parser (same name, same order, so args.json
    reads as before), and `given`: the flags the user typed (what a resume honours; the sweep's passthrough).
    Frozen: a changed setting is a new config (dataclasses.replace), so what a run records is what it used."""
    # model
    z_dim: int
    num_filters: int
    flow: str
    flow_length: int
    # optimization
    objective: str
    train_samples: int
    lr: float
    batch_size: int
    epochs: int
    seed: int
    grad_clip: Optional[float]
    # data
    dataset: str
    bits: int
    data_dir: Path
    num_workers: int
    # speed
    precision: str
    channels_last: Optional[bool]
    compile: str
    deterministic: bool
    # evaluation
    eval_batch_size: int
    final_iw_samples: int
    # logging
    log_dir: Path
    run_name: Optional[str]
    sample_epochs: list
    progress_bar: Optional[bool]
    resume: Optional[Path]
    # hardware
    device: str
    given: frozenset = frozenset()

    @classmethod
    def from_dict(cls, settings, given=()):
        """A config from a settings dict (args.json, a checkpoint's args, merged with the defaults): keys that
        are not settings (auto_choices, settings of older versions) are left out; paths become Paths."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "given"]
        values = {name: settings[name] for name in names}
        for name in ("data_dir", "log_dir", "resume"):
            values[name] = None if values[name] is None else Path(values[name])
        return cls(**values, given=frozenset(given))

    def to_dict(self):
        """The settings as plain values (paths as strings): for args.json and checkpoints (weights_only)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "given"}


def _plain(value):
    return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


def run_name_type(text):
    """argparse type: a run folder's name, one path component (no separator, not '.', '..' or hidden), so
    that the run is written inside --log_dir and nowhere else."""
    if not text or text in (".", "..") or text.startswith(".") or "/" in text or "\\" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"must be a plain folder name (no '/', not starting with '.'), got {text!r}")
    if len(text.encode()) > 200:
        raise argparse.ArgumentTypeError(f"is {len(text.encode())} bytes long; at most 200")
    return text


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
    optim.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    optim.add_argument("--batch_size", type=int_at_least(1), default=128, help="images per minibatch")
    optim.add_argument("--epochs", type=int_at_least(0), default=80, help="training epochs")
    optim.add_argument("--seed", type=seed_type, default=42,
                       help="seed of every random number generator (0 .. 2**32 - 1)")
    optim.add_argument("--grad_clip", type=positive_float, default=None,
                       help="clip the global gradient norm to this value (None: no clipping)")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=list(DATASETS), default="fashion_mnist",
                      help="fashion_mnist (the 2021 assignment) or mnist (2019: with --bits 1; 2022-2025: --bits 4)")
    data.add_argument("--bits", type=int_at_least(min(BITS), max(BITS)), default=4,
                      help="bits per pixel B: L = 2^B levels, level = floor(p/255 L) with 255 -> L-1; the decoder "
                           "emits L logits per pixel (B = 1: binarized, a Bernoulli per pixel)")
    data.add_argument("--data_dir", type=Path, default=PART1_DIR.parent / "data",
                      help="folder holding FashionMNIST/raw/ or MNIST/raw/ (downloaded there when missing)")
    data.add_argument("--num_workers", type=int_at_least(0), default=0,
                      help="DataLoader worker processes (the data are in memory: 0 is usually fastest)")

    speed = parser.add_argument_group("speed (same model and loss; see report/measurements.md)")
    speed.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                       help="bf16 autocast of the convs and linear layers (sampling, KL and cross-entropy stay "
                            "fp32); auto: bf16 only where the hardware runs it natively")
    speed.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels_last memory format for the model (None: auto, per device class)")
    speed.add_argument("--compile", nargs="?", const="on", choices=["auto", "on", "off"], default="auto",
                       help="torch.compile the training step (a bare --compile means on); auto: when the run "
                            "has enough steps to repay compilation and a C++ compiler (CPU) or triton (CUDA) works")
    speed.add_argument("--deterministic", action="store_true",
                       help="bitwise-reproducible CUDA runs (no cuDNN autotuning); CPU runs are always reproducible")

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval_batch_size", type=int_at_least(1), default=512,
                            help="images per validation/test batch")
    evaluation.add_argument("--final_iw_samples", type=int_at_least(0), default=100,
                            help="K of the importance-weighted test bpd computed after training (0: skip it)")

    logging = parser.add_argument_group("logging")
    logging.add_argument("--log_dir", type=Path, default=PART1_DIR / "VAE_logs",
                         help="each run gets a fresh timestamped folder in here")
    logging.add_argument("--run_name", type=run_name_type, default=None,
                         help="name of the run folder instead of <date>_<time>_z<z_dim> (a sweep names its runs)")
    logging.add_argument("--sample_epochs", type=int_at_least(0), nargs="*", default=[0, 10, 80],
                         help="epochs after which an 8x8 sample grid is saved (0: before training); the last "
                              "epoch always gets one")
    logging.add_argument("--progress_bar", action=argparse.BooleanOptionalAction, default=None,
                         help="tqdm progress bars over epochs and batches (None: only when stderr is a terminal)")
    logging.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                         help="continue this run folder from its checkpoints/last.pt, with its settings")

    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                          help="where to train; auto = CUDA when available")
    return parser


_UNSET = object()  # a value no flag parses to


def parse_train_args(argv=None, prog="train_torch.py"):
    """The TrainConfig of a command line; its `given` holds the flags typed there. argparse fills in a default
    only where the namespace it is given lacks the attribute, so a second parse into a namespace holding _UNSET
    for every setting leaves exactly the typed ones changed."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.flow == "none" and args.flow_length > 0 and args.resume is None:
        parser.error(f"--flow_length {args.flow_length} needs --flow planar or --flow radial")
    typed = parser.parse_args(argv, namespace=argparse.Namespace(**{name: _UNSET for name in vars(args)}))
    return TrainConfig(**vars(args), given=frozenset(k for k, v in vars(typed).items() if v is not _UNSET))


def defaults():
    """Every setting's default, as TrainConfig.to_dict gives it."""
    return parse_train_args([]).to_dict()


def args_to_dict(config):
    """config.to_dict(), under the name the sweep and the report have used."""
    return config.to_dict()


def find_data_dir(data_dir, dataset="fashion_mnist"):
    """A run's data_dir; a relative one (older runs stored it as typed) is looked up from here, the repo
    root, then part1/ (where it holds the dataset's raw/ folder)."""
    data_dir = Path(data_dir)
    if data_dir.is_absolute():
        return data_dir
    for base in (Path.cwd(), REPO_ROOT, PART1_DIR):
        if (base / data_dir / DATASETS[dataset].folder / "raw").is_dir():
            return (base / data_dir).resolve()
    return data_dir


def check_saved_settings(settings, where):
    """A settings dict read from a file (a checkpoint's or args.json's `args`) checked as the command line would
    check it: every known setting is rebuilt into its flag and parsed by the same parser (types, ranges,
    choices), and paths must be strings. Unknown keys (e.g. auto_choices) are left alone. One-line UserError
    naming `where` and the setting."""
    default = defaults()
    argv = []
    for name, value in settings.items():
        if name not in default or name == "resume" or (value is None and default[name] is None):
            continue
        if value is None or (isinstance(default[name], str) and not isinstance(value, str)):
            raise UserError(f"{where}: setting {name!r} is {value!r}, not a {'path' if name.endswith('dir') else 'value'}"
                            " of the right type; the file is damaged")
        if isinstance(value, bool) and name == "deterministic":
            argv += ["--deterministic"] if value else []
        elif isinstance(value, bool) and (default[name] is None or isinstance(default[name], bool)):
            argv.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list):
            argv += [f"--{name}", *map(str, value)]
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            argv += [f"--{name}", str(value)]
        else:
            raise UserError(f"{where}: setting {name!r} is {value!r}, not of the right type; the file is damaged")
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            build_parser().parse_args(argv)
    except SystemExit:
        message = captured.getvalue().strip().splitlines()[-1:] or ["invalid"]
        raise UserError(f"{where}: {message[0].split(': error: ', 1)[-1].replace(' (see --help)', '')}; "
                        "the file is damaged") from None
