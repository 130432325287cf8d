"""dgmkit/runs/folder.py: RunDir's fresh folders (never one that exists), its history (a torn last line dropped, a
damaged one refused in one line, the records before an epoch), and the resume command it prints."""
import errno
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import PART1
from dgmkit.errors import UserError
from dgmkit.runs.folder import RunDir


def test_create_never_reuses_a_folder(tmp_path):
    """A --run_name that exists is refused in one line; a timestamped name that exists gets _1, _2, ..."""
    named = RunDir.create(tmp_path, "z2", name="mine")
    assert named.path == tmp_path / "mine" and (tmp_path / "mine" / "checkpoints").is_dir()
    with pytest.raises(UserError, match="already holds a run named mine"):
        RunDir.create(tmp_path, "z2", name="mine")
    stamped = [RunDir.create(tmp_path, "z2") for _ in range(3)]  # within a second or two: suffixes appear
    assert len({run.path for run in stamped}) == 3
    for run in stamped:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_z2(_\d+)?", run.path.name), run.path.name
        assert (run.path / "checkpoints").is_dir()


def test_history_drops_a_torn_last_line_and_refuses_a_damaged_one(tmp_path):
    run = RunDir(tmp_path)
    records = [{"epoch": e, "seconds": 0.5, "train_bpd": 4.0 - e, "val_bpd": 4.5 - e} for e in (1, 2, 3)]
    for record in records:
        run.append_history(record)
    assert run.read_history() == records
    assert run.read_history(before_epoch=3) == records[:2]  # epochs < 3
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write('{"epoch": 4, "seconds": 0.5, "train_b')  # an append cut by a kill
    assert run.read_history() == records
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    lines[1] = json.dumps({**records[1], "val_bpd": "low"})  # a damaged record in the middle
    (tmp_path / "history.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"history\.jsonl, line 2: 'val_bpd' is 'low', not a number"):
        run.read_history()
    lines[1] = "not json"
    (tmp_path / "history.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"history\.jsonl, line 2, is not an epoch record"):
        run.read_history()
    assert RunDir(tmp_path / "elsewhere").read_history() == []  # no history yet


def test_the_printed_resume_command_survives_spaces(tmp_path):
    run_dir = tmp_path / "my runs" / "a run"
    hint = RunDir(run_dir).resume_hint(4, PART1 / "train_torch.py")
    command = hint.split("continue with: ", 1)[1]
    assert shlex.split(command)[-2:] == ["--resume", str(run_dir)]


# Another process that locks a folder as RunDir.locked does (an exclusive, non-blocking flock on <folder>/.lock),
# without torch's seconds of start-up; it says "locked" (and holds on) or "busy".
LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("busy", flush=True)
    sys.exit()
print("locked", flush=True)
time.sleep(60)
"""


def _lock_in_another_process(folder):
    """A real second process that tries to lock `folder`: (its answer, the process, to be killed)."""
    process = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    return process.stdout.readline().strip(), process


def test_the_lock_file_stays_so_that_a_folder_never_has_two_holders(tmp_path):
    """Issue 25 #4: a process that opened .lock just before this one released the lock must lock the same file that a
    third process then tries. With the file unlinked on release, the first held a lock on a deleted file while the
    third locked a new one: two holders of one folder."""
    run = RunDir(tmp_path)
    early = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)  # a process that opened the file just before ...
    try:
        with run.locked():
            pass
        assert (tmp_path / ".lock").is_file()  # released, not removed
        fcntl.flock(early, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ... now holds the lock ...
        answer, third = _lock_in_another_process(tmp_path)
        third.kill()
        third.wait()
        assert answer == "busy"  # ... so a third process is refused
        with pytest.raises(UserError, match="is in use by another process"):
            with run.locked():
                pass
    finally:
        os.close(early)
    with run.locked():  # once it lets go, the folder locks again
        pass


def test_a_lock_held_by_another_process_is_reported_as_in_use(tmp_path):
    answer, holder = _lock_in_another_process(tmp_path)
    try:
        assert answer == "locked"
        with pytest.raises(UserError, match=r"^the run folder .* is in use by another process"):
            with RunDir(tmp_path).locked():
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_failure_that_is_not_contention_says_what_it_is(tmp_path, monkeypatch):
    """A file system without lock support (ENOLCK, EOPNOTSUPP) is not "in use by another process"."""
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(UserError) as error:
        with RunDir(tmp_path).locked():
            pass
    assert "in use" not in str(error.value) and "No locks available" in str(error.value)
    assert "may not support file locks" in str(error.value)
