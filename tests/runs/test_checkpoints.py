"""dgmkit/runs/checkpoints.py: a checkpoint is read without running code (its damaged, foreign and contradictory
forms, refused in one line by the CLI: tests/end_to_end/test_bad_inputs_resume.py and _hardening.py)."""
import pickle

import pytest
import torch

from conftest import RunsCode
from dgmkit.runs.checkpoints import CheckpointError, load_checkpoint


def test_load_checkpoint_refuses_a_pickle_that_runs_code(tmp_path):
    """Zip (torch.save) and plain pickles alike; the CLI's one-line error: test_bad_inputs_resume.py."""
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "args": {"z_dim": 20, "num_filters": 32}, "payload": RunsCode(marker)},
               tmp_path / "zip.pt")
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"payload": RunsCode(marker)}, f, protocol=2)
    for candidate in (tmp_path / "zip.pt", tmp_path / "plain.pkl"):
        with pytest.raises(CheckpointError, match="refusing to load"):
            load_checkpoint(candidate)
    assert not marker.exists()
