"""What every model family's training run shares: the frozen settings object (RunConfig, subclassed per family:
config.TrainConfig for the VAE, configs_2019 for RealNVP and the GAN) and the argparse groups of the common
flags, with the same names, defaults and meanings in every training script.

A family's parser is one grouped block: its own flags, then these. parse() records which flags the user typed
(`given`: what a resume honours); check_saved() re-parses settings read from a file with the same parser.
"""
import argparse
import contextlib
import dataclasses
import functools
import io
from pathlib import Path
from typing import ClassVar, Optional

from dgmkit.cli.args import int_at_least, positive_float, run_name_type, seed_type
from dgmkit.data.datasets import BITS, DATASETS
from dgmkit.errors import UserError

PART1_DIR = Path(__file__).resolve().parents[2]  # part1/: dgmkit/engine/settings.py is two folders down
REPO_ROOT = PART1_DIR.parent
_UNSET = object()  # a value no flag parses to


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """The settings every training run has, one field per common flag, and `given`: the flags the user typed.
    Frozen: a changed setting is a new config (dataclasses.replace), so what a run records is what it used.

    A subclass adds its family's fields and sets SCRIPT (its training script), REQUIRED (settings a checkpoint
    of the family always records), SHAPE_KEYS (the settings its weights' shapes depend on, with SHAPE_DEFAULTS
    for checkpoints from before a key existed), and defines build_parser() and run_stem()."""
    SCRIPT: ClassVar[Path]
    REQUIRED: ClassVar[tuple]
    SHAPE_KEYS: ClassVar[tuple]
    SHAPE_DEFAULTS: ClassVar[dict] = {}
    # optimization
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
    def build_parser(cls, prog=None):
        raise NotImplementedError

    def run_stem(self):
        """The end of a new run folder's name, <date>_<time>_<stem>."""
        raise NotImplementedError

    @classmethod
    def validate(cls, parser, args):
        """Refuse (parser.error) combinations of flags that no single flag's type can."""

    @classmethod
    def parse(cls, argv=None, prog=None):
        """The config of a command line; its `given` holds the flags typed there. argparse fills in a default
        only where the namespace it is given lacks the attribute, so a second parse into a namespace holding
        _UNSET for every setting leaves exactly the typed ones changed."""
        parser = cls.build_parser(prog)
        args = parser.parse_args(argv)
        cls.validate(parser, args)
        typed = parser.parse_args(argv, namespace=argparse.Namespace(**{name: _UNSET for name in vars(args)}))
        return cls(**vars(args), given=frozenset(k for k, v in vars(typed).items() if v is not _UNSET))

    @classmethod
    def defaults(cls):
        """Every setting's default, as to_dict gives it."""
        return cls.parse([]).to_dict()

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
        """The settings as plain values (paths as strings), in the order of the parser's flags (the family's own
        first): for args.json, checkpoints (weights_only) and the commands the report rebuilds."""
        return {name: _plain(getattr(self, name)) for name in _flag_order(type(self))}

    @classmethod
    def check_saved(cls, settings, where):
        """A settings dict read from a file (a checkpoint's or args.json's `args`) checked as the command line
        would check it: every known setting is rebuilt into its flag and parsed by the same parser (types,
        ranges, choices), and paths must be strings. Unknown keys (e.g. auto_choices) are left alone. One-line
        UserError naming `where` and the setting."""
        default = cls.defaults()
        argv = []
        for name, value in settings.items():
            if name not in default or name == "resume" or (value is None and default[name] is None):
                continue
            if value is None or (isinstance(default[name], str) and not isinstance(value, str)):
                raise UserError(f"{where}: setting {name!r} is {value!r}, not a "
                                f"{'path' if name.endswith('dir') else 'value'} of the right type; the file is damaged")
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
                cls.build_parser().parse_args(argv)
        except SystemExit:
            message = captured.getvalue().strip().splitlines()[-1:] or ["invalid"]
            raise UserError(f"{where}: {message[0].split(': error: ', 1)[-1].replace(' (see --help)', '')}; "
                            "the file is damaged") from None


@functools.cache
def _flag_order(family):
    """The settings of a RunConfig subclass in the order its parser defines them."""
    return tuple(vars(family.build_parser().parse_args([])))


def _plain(value):
    return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


# ---- the common flags, group by group (each family's build_parser calls these in this order) ----------------

def add_optimization_flags(group, lr=1e-3, batch_size=128, epochs=80):
    group.add_argument("--lr", type=positive_float, default=lr, help="Adam learning rate")
    group.add_argument("--batch_size", type=int_at_least(1), default=batch_size, help="images per minibatch")
    group.add_argument("--epochs", type=int_at_least(0), default=epochs, help="training epochs")
    group.add_argument("--seed", type=seed_type, default=42,
                       help="seed of every random number generator (0 .. 2**32 - 1)")
    group.add_argument("--grad_clip", type=positive_float, default=None,
                       help="clip the global gradient norm to this value (None: no clipping)")


def add_data_flags(parser, dataset="fashion_mnist", bits=4, help_tail=""):
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=list(DATASETS), default=dataset,
                      help="fashion_mnist (the 2021 assignment) or mnist (2019: with --bits 1; 2022-2025: --bits 4)")
    data.add_argument("--bits", type=int_at_least(min(BITS), max(BITS)), default=bits,
                      help=f"bits per pixel B: L = 2^B levels, level = floor(p/255 L) with 255 -> L-1{help_tail}")
    data.add_argument("--data_dir", type=Path, default=REPO_ROOT / "data",
                      help="folder holding FashionMNIST/raw/ or MNIST/raw/ (downloaded there when missing)")
    data.add_argument("--num_workers", type=int_at_least(0), default=0,
                      help="DataLoader worker processes (the data are in memory: 0 is usually fastest)")


def add_speed_flags(parser, precision="auto", compile="auto"):
    speed = parser.add_argument_group("speed (same model and loss; see report/measurements.md)")
    speed.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=precision,
                       help="bf16 autocast of the convs and linear layers (sampling, KL and cross-entropy stay "
                            "fp32); auto: bf16 only where the hardware runs it natively")
    speed.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels_last memory format for the model (None: auto, per device class)")
    speed.add_argument("--compile", nargs="?", const="on", choices=["auto", "on", "off"], default=compile,
                       help="torch.compile the training step (a bare --compile means on); auto: when the run "
                            "has enough steps to repay compilation and a C++ compiler (CPU) or triton (CUDA) works")
    speed.add_argument("--deterministic", action="store_true",
                       help="bitwise-reproducible CUDA runs (no cuDNN autotuning); CPU runs are always reproducible")


def add_evaluation_group(parser):
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval_batch_size", type=int_at_least(1), default=512,
                            help="images per validation/test batch")
    return evaluation


def add_logging_flags(parser, log_dir, stem, sample_epochs=(0, 10, 80)):
    logging = parser.add_argument_group("logging")
    logging.add_argument("--log_dir", type=Path, default=log_dir,
                         help="each run gets a fresh timestamped folder in here")
    logging.add_argument("--run_name", type=run_name_type, default=None,
                         help=f"name of the run folder instead of <date>_<time>_{stem} (a sweep names its runs)")
    logging.add_argument("--sample_epochs", type=int_at_least(0), nargs="*", default=list(sample_epochs),
                         help="epochs after which an 8x8 sample grid is saved (0: before training); the last "
                              "epoch always gets one")
    logging.add_argument("--progress_bar", action=argparse.BooleanOptionalAction, default=None,
                         help="tqdm progress bars over epochs and batches (None: only when stderr is a terminal)")
    logging.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                         help="continue this run folder from its checkpoints/last.pt, with its settings")


def add_hardware_flags(parser):
    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                          help="where to train; auto = CUDA when available")


def add_run_flags(parser, *, log_dir, stem, sample_epochs, dataset="fashion_mnist", bits=4, help_tail="",
                  precision="auto", compile="auto"):
    """The groups after a family's model and optimization flags, in order: data, speed, evaluation, logging,
    hardware. Returns the evaluation group, for the family's own evaluation flags."""
    add_data_flags(parser, dataset, bits, help_tail)
    add_speed_flags(parser, precision, compile)
    evaluation = add_evaluation_group(parser)
    add_logging_flags(parser, log_dir, stem, sample_epochs)
    add_hardware_flags(parser)
    return evaluation


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


def fp32_only(parser, args, what):
    if args.precision != "fp32":
        parser.error(f"--precision {args.precision}: {what} trains in fp32 only; drop the flag")
