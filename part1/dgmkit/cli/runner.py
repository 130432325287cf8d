"""run_cli: a script's main(args) run so that every expected failure is one line on stderr and the exit status of
part1/README.md (dgmkit.errors), and SIGTERM stops it as Ctrl-C does. one_line keeps each such line one line
whatever it quotes (a path holding a newline). Imports nothing heavy (cli/startup.py uses one_line before torch).
"""
import signal
import sys

from dgmkit.errors import (EXIT_DIVERGED, EXIT_USAGE, Diverged, Interrupted, Terminated, UserError,
                           allocation_failure, first_line, signal_name_and_status)


# Control characters and line or paragraph separators, as Python writes them in a str literal: \n, \t, \x1b, \u2028.
_ESCAPES = {code: ascii(chr(code))[1:-1] for code in (*range(0x20), *range(0x7f, 0xa0), 0x2028, 0x2029)}


def one_line(text):
    """`text` with each control character and line break escaped (newline -> \\n, tab -> \\t, ESC -> \\x1b, ...),
    so a message quoting a path that holds one stays one line on the terminal and in a log."""
    return str(text).translate(_ESCAPES)


def _say(line):
    print(one_line(line), file=sys.stderr)


def _raise_terminated(signum, frame):
    raise Terminated()


def run_cli(prog, main, args):
    """Run main(args) and exit with the status of part1/README.md; every expected failure is one line on stderr
    (one_line: control characters in the message, e.g. a path's newline, are escaped).

    A failed allocation (MemoryError, or torch's allocator RuntimeErrors: a batch or model that does not fit) is a
    user error, one line saying what to lower; so is an OSError that reaches here (a path the OS refused: too long,
    a link loop, no permission, a full disk).
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # from entry's start-up guard
    try:
        main(args)
    except UserError as error:
        _say(f"{prog}: error: {error}")
        sys.exit(EXIT_USAGE)
    except OSError as error:  # a path the OS refused (ENAMETOOLONG, ELOOP, EACCES, ENOSPC, ...): the user's to fix
        where = f"{error.filename}: " if error.filename else ""
        _say(f"{prog}: error: {where}{error.strerror or first_line(error)}")
        sys.exit(EXIT_USAGE)
    except (MemoryError, RuntimeError) as error:  # torch's allocators raise RuntimeErrors (OutOfMemoryError on CUDA)
        needed = allocation_failure(error)
        if needed is None:
            raise  # a bug: its traceback is wanted
        _say(f"{prog}: error: out of memory ({needed}): a batch or the model does not fit; lower the batch sizes, "
             "the samples per image or the model's size flags (see --help)")
        sys.exit(EXIT_USAGE)
    except Diverged as error:
        _say(f"{prog}: error: {error}")
        sys.exit(EXIT_DIVERGED)
    except Interrupted as stop:
        _say(f"{prog}: {stop}")
        sys.exit(stop.status)
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = signal_name_and_status(stop)
        _say(f"{prog}: stopped by {name}; nothing was written")
        sys.exit(status)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
