"""What every command-line script shares: the error type, exit statuses, argparse types, device choice,
and the wrapper that turns every expected failure into one line on stderr and an exit status.

Exit statuses (part1/README.md's table): 0 done, 1 diverged (NaN/Inf loss), 2 bad input,
130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM.
"""
import argparse
import math
import signal
import sys
from pathlib import Path

import torch

EXIT_OK, EXIT_DIVERGED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
SEED_MAX = 2 ** 32 - 1  # numpy's legacy seeding takes 0 .. 2**32 - 1


class UserError(Exception):
    """A mistake in what the user asked for or gave us (flags, files, folders): one line, exit status 2."""


class Diverged(Exception):
    """The loss became NaN or Inf: one line, exit status 1."""


class NonFiniteLossError(Diverged):
    """A NaN or Inf loss: training stops before anything is saved from the diverged weights (exit 1)."""

    def __init__(self, where, step=None):
        super().__init__(where if step is None else f"{where}, step {step}")
        self.where, self.step = where, step


class Terminated(BaseException):
    """Raised by the SIGTERM handler, as KeyboardInterrupt is for SIGINT (a BaseException, so that
    `except Exception` blocks do not swallow it)."""


class Interrupted(BaseException):
    """A signal turned into one line that says what was kept, e.g. how to resume; `status` is 130 or 143."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def signal_name_and_status(stop):
    """('SIGINT', 130) for a KeyboardInterrupt, ('SIGTERM', 143) for Terminated."""
    return ("SIGINT", EXIT_SIGINT) if isinstance(stop, KeyboardInterrupt) else ("SIGTERM", EXIT_SIGTERM)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr (exit status 2) instead of the usage block: the
    manual's promise (part1/README.md) for every bad input. --help still prints the whole usage."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def int_at_least(minimum, maximum=None):
    """argparse type: an integer in [minimum, maximum]."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return parse


def positive_float(text):
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


seed_type = int_at_least(0, SEED_MAX)


def resolve_device(name):
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA device; use --device cpu (or auto)")
    return torch.device(name)


def resolve_path(path, flag):
    """The absolute, link-free form of a path the user gave (resolved once, where it enters: every write below
    it then refuses links, atomic_io); a link loop or a dangling link is a one-line UserError."""
    path = Path(path).expanduser()
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError):  # Python < 3.13 raises RuntimeError for a loop
        raise UserError(f"{flag} {path}: a loop of symbolic links; fix or remove the link") from None
    if path.is_symlink() and not path.exists():
        raise UserError(f"{flag} {path} is a dangling symbolic link (to {resolved}); create that folder or fix "
                        "the link") from None
    return resolved


def first_line(error):
    """The first non-empty line of an exception's message (its type name when it has none)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _raise_terminated(signum, frame):
    raise Terminated()


def run_cli(prog, main, args):
    """Run main(args) and exit with the status of part1/README.md; every expected failure is one line on stderr.

    MemoryError (a model or batch that does not fit) is a user error: the message names the flags; so is an
    OSError that reaches here (a path the OS refused: too long, a link loop, no permission, a full disk).
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # from entry's start-up guard
    try:
        main(args)
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except OSError as error:  # a path the OS refused (ENAMETOOLONG, ELOOP, EACCES, ENOSPC, ...): the user's to fix
        where = f"{error.filename}: " if error.filename else ""
        print(f"{prog}: error: {where}{error.strerror or first_line(error)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except MemoryError:
        print(f"{prog}: error: out of memory: the model or a batch does not fit; lower --z_dim, --num_filters "
              "or the batch size", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except Diverged as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    except Interrupted as stop:
        print(f"{prog}: {stop}", file=sys.stderr)
        sys.exit(stop.status)
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = signal_name_and_status(stop)
        print(f"{prog}: stopped by {name}; nothing was written", file=sys.stderr)
        sys.exit(status)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
