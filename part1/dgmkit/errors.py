"""The errors and exit statuses every script shares (part1/README.md's table): 0 done, 1 diverged (NaN/Inf
loss), 2 bad input, 130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM. cli/runner.py turns each into one
line on stderr and its status. Imports nothing of the project (every wing may raise these).
"""
import re

EXIT_OK, EXIT_DIVERGED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143


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


def first_line(error):
    """The first non-empty line of an exception's message (its type name when it has none)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


_ALLOCATOR = re.compile(r"can't allocate memory|out of memory|not enough memory", re.IGNORECASE)


def allocation_failure(error):
    """'could not allocate 6.1 GB' (or less precise) when `error` is a failed allocation: a MemoryError, torch's
    OutOfMemoryError (CUDA's, a RuntimeError), or the RuntimeError of torch's CPU allocator ("DefaultCPUAllocator:
    can't allocate memory"); None for any other error. (Told apart by type and text, so this module needs no torch.)"""
    text = str(error)
    if not isinstance(error, MemoryError) and not (isinstance(error, RuntimeError) and (
            type(error).__name__ == "OutOfMemoryError" or _ALLOCATOR.search(text))):
        return None
    size = re.search(r"allocate (\d+) bytes", text)
    if size:
        return f"could not allocate {int(size.group(1)) / 1e9:.1f} GB"
    size = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]i?B)", text)
    return f"could not allocate {size.group(1)}" if size else "could not allocate the memory it needed"
