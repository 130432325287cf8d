"""The command line's vocabulary, shared by every script: the parser (a usage error is one line, exit status 2),
argparse types with their ranges, and the paths a user typed resolved where they enter.
"""
import argparse
import math
import os
import sys
from pathlib import Path

from dgmkit.cli.runner import one_line
from dgmkit.errors import EXIT_USAGE, UserError

SEED_MAX = 2 ** 32 - 1  # numpy's legacy seeding takes 0 .. 2**32 - 1
INT_MAX = 2 ** 63 - 1  # torch's sizes and counts are 64-bit: a larger count is refused where it is parsed


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr (exit status 2) instead of the usage block: the
    manual's promise (part1/README.md) for every bad input. --help still prints the whole usage."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        print(one_line(f"{self.prog}: error: {message} (see --help)"), file=sys.stderr)  # a typed newline too
        sys.exit(EXIT_USAGE)


def int_at_least(minimum, maximum=None):
    """argparse type: an integer in [minimum, maximum] (no maximum: at most INT_MAX, torch's 64-bit limit)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        if value > INT_MAX:
            raise argparse.ArgumentTypeError(f"must be at most 2**63 - 1 (a 64-bit integer), got {value}")
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


def float_between(low, high, low_open=False, high_open=False):
    """argparse type: a finite float in the interval from low to high, each end closed unless said open; the
    message writes the interval as [low, high), (low, high], ..."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):  # NaN fails both
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text}")
        return value
    return parse


seed_type = int_at_least(0, SEED_MAX)


def _shown(text):
    """A path's text as the bytes of its name, each undecodable byte escaped: os.fsdecode(b"runs\\xff") -> runs\\xff."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def utf8_problem(text):
    """Why a path's text cannot name a run's files, or None: it is not valid UTF-8 (os.fsdecode keeps
    undecodable bytes as lone surrogates, which TensorBoard and the JSON records cannot write) or holds a NUL."""
    if "\0" in text:
        return f"'{_shown(text)}' holds a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return (f"'{_shown(text)}' is not valid UTF-8 (TensorBoard and the run's records need UTF-8 names); "
                "rename the folder or pass another")
    return None


def path_type(text):
    """argparse type of every path flag: a Path whose text is valid UTF-8 (utf8_problem)."""
    problem = utf8_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def resolve_path(path, flag):
    """The absolute, link-free form of a path the user gave (resolved once, where it enters: every write below
    it then refuses links, atomic_io); a link loop, a dangling link or a name that is not valid UTF-8 (typed, or
    in the current folder's or the home folder's path) is a one-line UserError, before any folder is made."""
    problem = utf8_problem(str(path))
    if problem:
        raise UserError(f"{flag} {problem}")
    path = Path(path).expanduser()
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError):  # Python < 3.13 raises RuntimeError for a loop
        raise UserError(f"{flag} {path}: a loop of symbolic links; fix or remove the link") from None
    if path.is_symlink() and not path.exists():
        raise UserError(f"{flag} {path} is a dangling symbolic link (to {resolved}); create that folder or fix "
                        "the link") from None
    problem = utf8_problem(str(resolved))
    if problem:
        raise UserError(f"{flag} {_shown(str(path))}: its absolute path {problem}")
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
    problem = utf8_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    if len(text.encode()) > 200:
        raise argparse.ArgumentTypeError(f"is {len(text.encode())} bytes long; at most 200")
    return text
