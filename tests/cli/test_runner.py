"""dgmkit/cli/runner.py: run_cli turns every expected failure of a script's main into one line on stderr, starting with
the script's name, and the exit status of part1/README.md; SIGTERM is raised as Terminated while main runs, and the
previous signal handlers come back afterwards."""
import errno
import os
import signal

import pytest
import torch

from dgmkit.cli.runner import one_line, run_cli
from dgmkit.errors import Interrupted, NonFiniteLossError, Terminated, UserError


def raising(error):
    def main(args):
        raise error
    return main


@pytest.mark.parametrize("error, status, line", [
    (UserError("--z_dim must be at least 1"), 2, "tool.py: error: --z_dim must be at least 1"),
    (OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "/x/" + "y" * 300), 2,
     f"tool.py: error: /x/{'y' * 300}: {os.strerror(errno.ENAMETOOLONG)}"),
    (OSError("no strerror\nsecond line"), 2, "tool.py: error: no strerror"),
    (MemoryError(), 2, "tool.py: error: out of memory (could not allocate the memory it needed): a batch or the "
                       "model does not fit; lower the batch sizes, the samples per image or the model's size flags "
                       "(see --help)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 96000000000 bytes. Error code 12 (Cannot allocate memory)"), 2,
     "tool.py: error: out of memory (could not allocate 96.0 GB): a batch or the model does not fit; lower the batch "
     "sizes, the samples per image or the model's size flags (see --help)"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.6 GiB"),
     2, "tool.py: error: out of memory (could not allocate 2.00 GiB): a batch or the model does not fit; lower the "
        "batch sizes, the samples per image or the model's size flags (see --help)"),  # issue 26 #4: CUDA's
    (NonFiniteLossError("training", 3), 1, "tool.py: error: training, step 3"),
    (Interrupted("stopped by SIGTERM: last.pt holds epoch 2", 143), 143,
     "tool.py: stopped by SIGTERM: last.pt holds epoch 2"),
    (KeyboardInterrupt(), 130, "tool.py: stopped by SIGINT; nothing was written"),
    (Terminated(), 143, "tool.py: stopped by SIGTERM; nothing was written"),
])
def test_each_failure_is_one_line_and_its_status(error, status, line, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("tool.py", raising(error), None)
    assert info.value.code == status
    assert capsys.readouterr().err == line + "\n"


def test_one_line_escapes_control_characters_and_line_breaks():
    assert one_line("a\nb\r\tc\x1b[31md\x00\x7f\x85e\u2028f\u2029") == (
        "a\\nb\\r\\tc\\x1b[31md\\x00\\x7f\\x85e\\u2028f\\u2029")
    plain = "--log_dir /tmp/runs é 中 \\n 'quoted' \udcff"  # printable text (a backslash, a lone surrogate) as it is
    assert one_line(plain) == plain


# Issue 25, cause 17: a path holding a newline made the one-line error two lines.
@pytest.mark.parametrize("error, status, line", [
    (UserError("--resume /runs/a\nb: no checkpoint"), 2, "tool.py: error: --resume /runs/a\\nb: no checkpoint"),
    (OSError(errno.EACCES, os.strerror(errno.EACCES), "/runs/a\nb"), 2,
     f"tool.py: error: /runs/a\\nb: {os.strerror(errno.EACCES)}"),
    (NonFiniteLossError("training\r", 3), 1, "tool.py: error: training\\r, step 3"),
    (Interrupted("stopped by SIGINT: /runs/a\nb/last.pt holds epoch 1", 130), 130,
     "tool.py: stopped by SIGINT: /runs/a\\nb/last.pt holds epoch 1")])
def test_a_message_holding_a_newline_is_still_one_line(error, status, line, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("tool.py", raising(error), None)
    assert info.value.code == status
    assert capsys.readouterr().err == line + "\n"


def test_a_run_that_succeeds_returns_quietly(capsys):
    seen = []
    assert run_cli("tool.py", seen.append, "the args") is None
    assert seen == ["the args"] and capsys.readouterr().err == ""


def test_an_unexpected_error_is_not_hidden():
    """A bug (not a bad input) keeps its traceback: run_cli does not turn it into a line and a status."""
    with pytest.raises(ZeroDivisionError):
        run_cli("tool.py", lambda args: 1 / 0, None)


def test_sigterm_is_terminated_while_main_runs_and_the_handlers_come_back(capsys):
    def mine(signum, frame):
        pass
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        def main(args):
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C: KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # delivered here: raises Terminated inside main
            pytest.fail("SIGTERM did not stop main")
        with pytest.raises(SystemExit) as info:
            run_cli("tool.py", main, None)
        assert info.value.code == 143
        assert capsys.readouterr().err == "tool.py: stopped by SIGTERM; nothing was written\n"
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_runtime_error_that_is_not_an_allocation_keeps_its_traceback():
    """A bug (a shape mismatch) is not a user's mistake: it propagates, traceback and all."""
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run_cli("tool.py", raising(RuntimeError("mat1 and mat2 shapes cannot be multiplied")), None)
