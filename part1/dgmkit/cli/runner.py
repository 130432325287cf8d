"""run_cli: a script's main(args) run so that every expected failure is one line on stderr and the exit status of
part1/README.md (dgmkit.errors), and SIGTERM stops it as Ctrl-C does.
"""
import signal
import sys

from dgmkit.errors import (EXIT_DIVERGED, EXIT_USAGE, Diverged, Interrupted, Terminated, UserError, first_line,
                           signal_name_and_status)


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
