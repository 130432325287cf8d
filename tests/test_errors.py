"""dgmkit/errors.py: the exit statuses of part1/README.md's table, the errors' messages and kinds (a signal's error is
a BaseException, so that an `except Exception` cannot swallow it), a signal's name and status, an error's first line."""
import pytest
import torch

from dgmkit import errors
from dgmkit.errors import (Diverged, Interrupted, NonFiniteLossError, Terminated, UserError, allocation_failure,
                           first_line, signal_name_and_status)


def test_the_exit_statuses_are_the_manuals():
    """0 done, 1 diverged, 2 bad input, 130 = 128 + SIGINT (2), 143 = 128 + SIGTERM (15): the shell's convention."""
    assert (errors.EXIT_OK, errors.EXIT_DIVERGED, errors.EXIT_USAGE) == (0, 1, 2)
    assert (errors.EXIT_SIGINT, errors.EXIT_SIGTERM) == (128 + 2, 128 + 15)


def test_a_non_finite_loss_names_where_and_the_step():
    error = NonFiniteLossError("training", 4)
    assert str(error) == "training, step 4" and (error.where, error.step) == ("training", 4)
    assert str(NonFiniteLossError("validation")) == "validation" and NonFiniteLossError("validation").step is None
    assert isinstance(error, Diverged) and not isinstance(error, UserError)


def test_signals_are_not_exceptions_a_handler_swallows():
    for stop in (Terminated(), Interrupted("stopped by SIGTERM: ...", 143)):
        assert isinstance(stop, BaseException) and not isinstance(stop, Exception)
    with pytest.raises(Terminated):
        try:
            raise Terminated()
        except Exception:  # what a careless handler would write
            pytest.fail("Terminated was caught by `except Exception`")
    assert Interrupted("kept epoch 2", 130).status == 130 and str(Interrupted("kept epoch 2", 130)) == "kept epoch 2"


def test_a_signals_name_and_status():
    assert signal_name_and_status(KeyboardInterrupt()) == ("SIGINT", 130)
    assert signal_name_and_status(Terminated()) == ("SIGTERM", 143)


@pytest.mark.parametrize("error, line", [
    (ValueError("first\nsecond"), "first"),
    (ValueError("\n\n  first after blank lines\nsecond"), "first after blank lines"),
    (RuntimeError(""), "RuntimeError"),  # no message: its type
    (OSError(), "OSError"),
])
def test_first_line(error, line):
    assert first_line(error) == line


def test_allocation_failure_recognises_torchs_allocators():
    """Issue 25, cause 11: torch's CPU allocator raises a RuntimeError, not a MemoryError, so a chunk too large for
    memory was a traceback. A real failed allocation (an exabyte) is recognised with its size; so are MemoryError
    and torch.OutOfMemoryError (CUDA's); any other RuntimeError is not."""
    with pytest.raises(RuntimeError) as failed:
        torch.empty(2 ** 60, dtype=torch.uint8)
    assert allocation_failure(failed.value) == "could not allocate 1152921504.6 GB"
    assert allocation_failure(MemoryError()) == "could not allocate the memory it needed"
    cuda = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 8 GiB")
    assert allocation_failure(cuda) == "could not allocate 2.00 GiB"
    assert allocation_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert allocation_failure(ValueError("out of memory")) is None
