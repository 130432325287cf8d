"""What every model family's training run shares: the frozen settings object, RunConfig, subclassed per family
(dgmkit.vae.config.TrainConfig, dgmkit.realnvp.config.RealNVPConfig, dgmkit.gan.config.GANConfig).

Settings are declared once: each is a dataclass field whose `flag(...)` holds its group, help, default, argparse
type (which checks its range) and choices. The parser is built from the fields (build_parser), and so is the check
of settings read back from a file (check_saved: each value checked against its field's type and its flag's range
and choices, with no round trip through argv). A family's fields come first in each group of its --help, except
under "evaluation", where the common --eval_batch_size leads; a family changes a common flag's default in
DEFAULTS and fills the family-dependent words of its help from HELP.
"""
import argparse
import dataclasses
import functools
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

from dgmkit.cli.args import ArgumentParser, int_at_least, path_type, positive_float, run_name_type, seed_type
from dgmkit.data.datasets import BITS, DATASETS
from dgmkit.errors import UserError
from dgmkit.places import PART1_DIR, REPO_ROOT

GROUPS = ("model", "optimization", "data", "speed", "evaluation", "logging", "hardware")  # --help's order
GROUP_TITLES = {"speed": "speed (same model and loss; see report/measurements.md)"}
COMMON_FIRST = ("evaluation",)  # groups where the common flags come before the family's own
_UNSET = object()  # a value no flag parses to


@dataclasses.dataclass(frozen=True)
class Flag:
    """A setting's command-line flag, --<field name>: its group, help, default and how text becomes a value.

    kind: "value" (one value through `type`), "list" (nargs *), "toggle" (--x / --no-x, None: auto),
    "switch" (store_true) or "optional" (nargs ?, a bare flag means `const`). `type` parses text and checks the
    range (argparse.ArgumentTypeError); `choices` lists the allowed values. help may name {stem} and {bits_tail},
    filled from the family's HELP."""
    group: str
    help: str
    default: Any = None
    type: Optional[Callable] = None
    choices: Optional[tuple] = None
    kind: str = "value"
    const: Any = None
    metavar: Optional[str] = None

    def add_to(self, group, name, default, help_words, help=None):
        """Add the flag to an argparse group; `help` (a family's own text) replaces the common one."""
        kwargs = {"default": list(default) if isinstance(default, tuple) else default,
                  "help": (help or self.help).format(**help_words)}
        if self.kind == "toggle":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif self.kind == "switch":
            kwargs["action"] = "store_true"
        else:
            kwargs.update({k: v for k, v in (("type", self.type), ("choices", self.choices), ("metavar", self.metavar))
                           if v is not None})
            if self.kind == "list":
                kwargs["nargs"] = "*"
            elif self.kind == "optional":
                kwargs.update(nargs="?", const=self.const)
        group.add_argument(f"--{name}", **kwargs)

    def problem(self, name, value, annotation):
        """Why `value` (read from a file) is not a value of this setting, or None: its Python type must be the
        field's (a path is stored as text), then it must pass the flag's type (the range) and choices."""
        kinds = _value_kinds(annotation)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            what = "path" if Path in kinds else "value"
            return f"setting {name!r} is {value!r}, not a {what} of the right type"
        values = value if isinstance(value, list) else [value]
        for item in values:
            if self.kind == "list" and (isinstance(item, bool) or not isinstance(item, int)):
                return f"setting {name!r} is {value!r}, not a list of integers"
            if self.type not in (None, Path) and self.kind in ("value", "list"):
                try:
                    self.type(item if isinstance(item, str) else str(item))
                except argparse.ArgumentTypeError as error:
                    return f"argument --{name}: {error}"
            if self.choices is not None and item not in self.choices:
                return (f"argument --{name}: invalid choice: {item!r} (choose from "
                        f"{', '.join(map(repr, self.choices))})")
        return None


def flag(group, help, default=None, **how):
    """A settings field declared with its flag (Flag's arguments); its default is the flag's, not the dataclass's
    (a config is made by parse or from_dict, never from defaults alone)."""
    return dataclasses.field(metadata={"flag": Flag(group, help, default, **how)})


def _value_kinds(annotation):
    """The Python types a stored value of a field may have: Path is stored as text; Optional adds None."""
    optional = typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(annotation)
    base = [a for a in typing.get_args(annotation) if a is not type(None)] if optional else [annotation]
    kinds = {int: (int,), float: (int, float), str: (str,), bool: (bool,), Path: (str, Path), list: (list,)}
    return tuple(k for b in base for k in kinds.get(b, (b,))) + ((type(None),) if optional else ())


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """The settings every training run has, one field per common flag, and `given`: the flags the user typed.
    Frozen: a changed setting is a new config (dataclasses.replace), so what a run records is what it used.

    The common defaults are the VAE's (the 2021 assignment's). A subclass adds its family's fields (each with its
    flag) and sets SCRIPT (its training script), DESCRIPTION
    (its --help's first line), REQUIRED (settings a checkpoint of the family always records), SHAPE_KEYS (the
    settings its weights' shapes depend on, with SHAPE_DEFAULTS for checkpoints from before a key existed),
    DEFAULTS (its defaults of common flags), HELP (the words its help fills in) and HELP_OF (its own help of a
    common flag whose common text would mislead about it); and defines run_stem()."""
    SCRIPT: ClassVar[Path]
    DESCRIPTION: ClassVar[str]
    REQUIRED: ClassVar[tuple]
    SHAPE_KEYS: ClassVar[tuple]
    SHAPE_DEFAULTS: ClassVar[dict] = {}
    DEFAULTS: ClassVar[dict] = {}
    HELP: ClassVar[dict] = {}
    HELP_OF: ClassVar[dict] = {}
    # optimization
    lr: float = flag("optimization", "Adam learning rate", 1e-3, type=positive_float)
    batch_size: int = flag("optimization", "images per minibatch", 128, type=int_at_least(1))
    epochs: int = flag("optimization", "training epochs", 80, type=int_at_least(0))
    seed: int = flag("optimization", "seed of every random number generator (0 .. 2**32 - 1)", 42, type=seed_type)
    grad_clip: Optional[float] = flag("optimization", "clip the global gradient norm to this value (None: no clipping)",
                                      type=positive_float)
    # data
    dataset: str = flag("data", "fashion_mnist (the 2021 assignment) or mnist (2019: with --bits 1; 2022-2025: "
                        "--bits 4)", "fashion_mnist", choices=tuple(DATASETS))
    bits: int = flag("data", "bits per pixel B: L = 2^B levels, level = floor(p/255 L) with 255 -> L-1{bits_tail}", 4,
                     type=int_at_least(min(BITS), max(BITS)))
    data_dir: Path = flag("data", "folder holding FashionMNIST/raw/ or MNIST/raw/ (downloaded there when missing)",
                          REPO_ROOT / "data", type=path_type)
    num_workers: int = flag("data", "DataLoader worker processes (the data are in memory: 0 is usually fastest)", 0,
                            type=int_at_least(0))
    # speed
    precision: str = flag("speed", "bf16 autocast of the convs and linear layers (sampling, KL and cross-entropy stay "
                          "fp32); auto: bf16 only where the hardware runs it natively", "auto",
                          choices=("auto", "fp32", "bf16"))
    channels_last: Optional[bool] = flag("speed", "channels_last memory format for the model (None: auto, per device "
                                         "class)", kind="toggle")
    compile: str = flag("speed", "torch.compile the training step (a bare --compile means on); auto: when the run has "
                        "enough steps to repay compilation and a C++ compiler (CPU) or triton (CUDA) works", "auto",
                        choices=("auto", "on", "off"), kind="optional", const="on")
    deterministic: bool = flag("speed", "bitwise-reproducible CUDA runs (no cuDNN autotuning); CPU runs are always "
                               "reproducible", False, kind="switch")
    # evaluation
    eval_batch_size: int = flag("evaluation", "images per validation/test batch", 512, type=int_at_least(1))
    # logging
    log_dir: Path = flag("logging", "each run gets a fresh timestamped folder in here", PART1_DIR / "VAE_logs",
                         type=path_type)
    run_name: Optional[str] = flag("logging", "name of the run folder instead of <date>_<time>_{stem} (a sweep names "
                                   "its runs)", type=run_name_type)
    sample_epochs: list = flag("logging", "epochs after which an 8x8 sample grid is saved (0: before training); the "
                               "last epoch always gets one", (0, 10, 80), type=int_at_least(0), kind="list")
    progress_bar: Optional[bool] = flag("logging", "tqdm progress bars over epochs and batches (None: only when stderr "
                                        "is a terminal)", kind="toggle")
    resume: Optional[Path] = flag("logging", "continue this run folder from its checkpoints/last.pt, with its settings",
                                  type=path_type, metavar="RUN_DIR")
    # hardware
    device: str = flag("hardware", "where to train; auto = CUDA when available", "auto", choices=("auto", "cpu", "cuda"))
    given: frozenset = frozenset()

    @classmethod
    def build_parser(cls, prog=None):
        """The family's parser, built from its fields: groups in GROUPS order (only those with flags)."""
        parser = ArgumentParser(prog=prog or cls.SCRIPT.name, description=cls.DESCRIPTION)
        flags = _flags(cls)
        for title in GROUPS:
            names = [name for name in _flag_order(cls) if flags[name].group == title]
            if names:
                group = parser.add_argument_group(GROUP_TITLES.get(title, title))
                for name in names:
                    flags[name].add_to(group, name, cls.DEFAULTS.get(name, flags[name].default), cls.HELP,
                                       cls.HELP_OF.get(name))
        return parser

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
        """Every setting's default, as to_dict gives it, in --help's order."""
        flags = _flags(cls)
        return {name: _plain(cls.DEFAULTS.get(name, flags[name].default)) for name in _flag_order(cls)}

    @classmethod
    def from_dict(cls, settings, given=()):
        """A config from a settings dict (args.json, a checkpoint's args, merged with the defaults): keys that
        are not settings (auto_choices, settings of older versions) are left out; paths become Paths."""
        values = {name: settings[name] for name in _flags(cls)}
        for name in ("data_dir", "log_dir", "resume"):
            values[name] = None if values[name] is None else Path(values[name])
        return cls(**values, given=frozenset(given))

    def to_dict(self):
        """The settings as plain values (paths as strings), in --help's order (the family's own first): for
        args.json, checkpoints (weights_only) and the commands the report rebuilds."""
        return {name: _plain(getattr(self, name)) for name in _flag_order(type(self))}

    @classmethod
    def check_saved(cls, settings, where):
        """A settings dict read from a file (a checkpoint's or args.json's `args`) checked value by value against
        each setting's declaration (Flag.problem); `resume`, unknown keys (e.g. auto_choices) and None where the
        default is None are left alone. One-line UserError naming `where` and the setting."""
        flags, hints, default = _flags(cls), typing.get_type_hints(cls), cls.defaults()
        for name, value in settings.items():
            if name not in flags or name == "resume" or (value is None and default[name] is None):
                continue
            problem = flags[name].problem(name, value, hints[name])
            if problem:
                raise UserError(f"{where}: {problem}; the file is damaged")


@functools.cache
def _flags(family):
    """{setting name: Flag} of a RunConfig subclass."""
    return {f.name: f.metadata["flag"] for f in dataclasses.fields(family) if "flag" in f.metadata}


@functools.cache
def _flag_order(family):
    """The settings of a RunConfig subclass in --help's order: by group (GROUPS), the family's own first within a
    group (the common ones first in COMMON_FIRST's), each in declaration order."""
    common = {f.name for f in dataclasses.fields(RunConfig)}
    names = list(_flags(family))
    order = []
    for title in GROUPS:
        ours = [n for n in names if _flags(family)[n].group == title and n not in common]
        theirs = [n for n in names if _flags(family)[n].group == title and n in common]
        order += theirs + ours if title in COMMON_FIRST else ours + theirs
    return tuple(order)


def _plain(value):
    return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


def fp32_only(parser, args, what):
    """The 2019 models' refusal of --precision other than fp32 (they are not checked in bf16 here)."""
    if args.precision != "fp32":
        parser.error(f"--precision {args.precision}: {what} trains in fp32 only; drop the flag")
