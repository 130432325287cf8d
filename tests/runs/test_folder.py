"""dgmkit/runs/folder.py: RunDir's fresh folders (never one that exists), its history (a torn last line dropped, a
damaged one refused in one line, the records before an epoch), and the resume command it prints."""
import json
import re
import shlex

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
