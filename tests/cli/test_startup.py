"""dgmkit/cli/startup.py: before torch is imported, SIGINT or SIGTERM ends a script with one line and its status
(130, 143) instead of a traceback; only a script's __main__ installs the handlers (the race against a real torch
import: tests/end_to_end/test_bad_inputs_hardening.py)."""
import signal
import subprocess
import sys

import pytest

from dgmkit.cli import startup

STARTING = """
import os, signal, sys, time
sys.argv[0] = {argv0!r}
from dgmkit.cli import startup
startup.guard_startup()
os.kill(os.getpid(), signal.{name})
time.sleep(30)
print("not stopped")
"""


@pytest.mark.parametrize("name, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_while_starting_is_one_line_and_its_status(name, status):
    result = subprocess.run([sys.executable, "-c", STARTING.format(name=name, argv0="/some/where/train_x.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == status, result.stderr
    assert result.stderr == f"train_x.py: stopped by {name} while starting; nothing was written\n"
    assert result.stdout == ""


def test_a_script_name_holding_a_newline_is_still_one_line():
    """Issue 25, cause 17: the start-up line quotes the script's name; a newline there is escaped."""
    result = subprocess.run([sys.executable, "-c", STARTING.format(name="SIGTERM", argv0="/runs/a\nb/train\nx.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 143, result.stderr
    assert result.stderr == "train\\nx.py: stopped by SIGTERM while starting; nothing was written\n"


def test_guard_startup_installs_a_handler_for_both_signals():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        startup.guard_startup()
        assert signal.getsignal(signal.SIGINT) is startup._stop and signal.getsignal(signal.SIGTERM) is startup._stop
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    assert startup.STATUS == {signal.SIGINT: ("SIGINT", 130), signal.SIGTERM: ("SIGTERM", 143)}
