"""dgmkit/runs/atomic_io.py: a write cut by a signal leaves the old file whole and no temporary file (the links it
refuses to write through, and a full disk: tests/end_to_end/test_bad_inputs*.py)."""
import pytest

from dgmkit.errors import Terminated
from dgmkit.runs.atomic_io import atomic_write, write_text


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
