"""The command line's vocabulary, shared by every script: the parser (a usage error is one line, exit status 2),
argparse types with their ranges, and the paths a user typed resolved where they enter.
"""
import argparse
import math
import os
import sys
from pathlib import Path

from dgmkit.errors import EXIT_USAGE, UserError

SEED_MAX = 2 ** 32 - 1  # numpy's legacy seeding takes 0 .. 2**32 - 1


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


def absolute(path):
    """The absolute, link-free form of `path` (relative: to the current folder), without raising: a link loop
    stays as it is (the command's own checks, resolve_path, refuse it in one line)."""
    path = Path(path).expanduser()
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def run_name_type(text):
    """argparse type: a run folder's name, one path component (no separator, not '.', '..' or hidden), so
    that the run is written inside --log_dir and nowhere else."""
    if not text or text in (".", "..") or text.startswith(".") or "/" in text or "\\" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"must be a plain folder name (no '/', not starting with '.'), got {text!r}")
    if len(text.encode()) > 200:
        raise argparse.ArgumentTypeError(f"is {len(text.encode())} bytes long; at most 200")
    return text
