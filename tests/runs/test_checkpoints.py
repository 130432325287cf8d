"""dgmkit/runs/checkpoints.py: a checkpoint is read without running code (its damaged, foreign and contradictory
forms, refused in one line by the CLI: tests/end_to_end/test_bad_inputs_resume.py and _hardening.py)."""
import pickle

import pytest
import torch

from conftest import RunsCode
from dgmkit.runs.checkpoints import CheckpointError, load_checkpoint, rng_states, set_rng_states


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


# ---- GPU states on a CPU machine (issue 26 #2, #6): logic tested with CUDA made to fail if touched --------------

def _no_cuda_calls(monkeypatch):
    """Any read or write of a GPU generator fails the test (a CPU run must not create a CUDA context)."""
    for name in ("get_rng_state_all", "set_rng_state_all", "device_count"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: pytest.fail("a CPU run touched CUDA"))


def test_a_cpu_run_never_reads_the_gpus_generators_and_keeps_a_gpu_checkpoints_states(monkeypatch):
    _no_cuda_calls(monkeypatch)
    kept = [torch.arange(16, dtype=torch.uint8), torch.arange(16, dtype=torch.uint8) + 1]  # as a 2-GPU run saved them
    states = rng_states(torch.Generator(), "cpu", kept)
    assert [s.tolist() for s in states["cuda"]] == [s.tolist() for s in kept]
    assert rng_states(torch.Generator(), "cpu")["cuda"] == []


def test_a_cpu_resume_of_a_gpu_checkpoint_says_it_is_not_bit_exact(monkeypatch):
    _no_cuda_calls(monkeypatch)
    order = torch.Generator()
    states = rng_states(order, "cpu", [torch.zeros(16, dtype=torch.uint8)])
    note = set_rng_states(states, order, "cpu")
    assert note.startswith("the checkpoint was trained on CUDA and this resume runs on the CPU")
    assert "\n" not in note and "not bit-exact" in note
    assert set_rng_states(rng_states(order, "cpu"), order, "cpu") is None  # a CPU run's own states: exact


def test_a_resume_on_another_number_of_gpus_says_so(monkeypatch):
    """The GPU branch's logic, with the device count mocked (no GPU here): 2 saved states, 1 GPU."""
    restored = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    order = torch.Generator()
    states = rng_states(order, "cpu", [torch.zeros(16, dtype=torch.uint8)] * 2)
    note = set_rng_states(states, order, "cuda")
    assert note.startswith("the checkpoint holds the random states of 2 GPU(s) and this machine has 1") and not restored
    states["cuda"] = states["cuda"][:1]
    assert set_rng_states(states, order, "cuda") is None and len(restored) == 1
