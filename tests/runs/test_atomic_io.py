"""dgmkit/runs/atomic_io.py: a write cut by a signal leaves the old file whole and no temporary file (the links it
refuses to write through, and a full disk: tests/end_to_end/test_bad_inputs*.py)."""
import errno
import os

import pytest

from dgmkit.errors import Terminated, UserError
from dgmkit.runs.atomic_io import atomic_write, storage_error, write_text


def test_atomic_write_leaves_no_temporary_file_on_a_signal(tmp_path):
    """SIGTERM (Terminated) in the middle of a write: the old file stays, whole, and no temporary file is left."""
    target = tmp_path / "best.pt"
    target.write_bytes(b"old checkpoint")

    def half_then_signal(f):
        f.write(b"half of the new")
        raise Terminated()
    with pytest.raises(Terminated):
        atomic_write(target, half_then_signal)
    assert target.read_bytes() == b"old checkpoint" and sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_a_storage_failure_wrapped_by_the_writer_is_one_line(tmp_path):
    """torch.save reports a full disk or `ulimit -f` as a RuntimeError whose __context__ is the OSError: the write is
    a one-line UserError naming the file and the OS's reason (a real limit: tests/end_to_end/test_hardening3_runs)."""
    target = tmp_path / "last.pt"
    target.write_bytes(b"old checkpoint")

    def wrapped_full_disk(f):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    with pytest.raises(UserError) as info:
        atomic_write(target, wrapped_full_disk)
    assert str(info.value).startswith(f"cannot write {target}: No space left on device; last.pt is unchanged")
    assert target.read_bytes() == b"old checkpoint" and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_bug_in_the_writer_is_not_called_a_storage_failure(tmp_path):
    def buggy(f):
        raise RuntimeError("a shape mismatch")
    with pytest.raises(RuntimeError, match="a shape mismatch"):
        atomic_write(tmp_path / "x.pt", buggy)
    assert list(tmp_path.iterdir()) == []
    assert storage_error(RuntimeError("no cause")) is None
