"""Imported first by every script, before torch: Ctrl-C or SIGTERM while the heavy imports run (a second or
more) ends the process with one line and the exit status of part1/README.md (130, 143) instead of a traceback.
cli/runner.py's run_cli takes the signals over once the script's main starts. Imports nothing heavy.
"""
import os
import signal
import sys

from dgmkit.cli.runner import one_line

STATUS = {signal.SIGINT: ("SIGINT", 130), signal.SIGTERM: ("SIGTERM", 143)}


def _stop(signum, frame):
    name, status = STATUS[signum]
    line = one_line(f"{os.path.basename(sys.argv[0])}: stopped by {name} while starting; nothing was written")
    os.write(2, (line + "\n").encode(errors="backslashreplace"))
    os._exit(status)


def guard_startup():
    """Install the start-up handlers (only a script's __main__ calls this, never an importing module)."""
    for signum in STATUS:
        signal.signal(signum, _stop)
