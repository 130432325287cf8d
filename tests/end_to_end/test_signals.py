"""Runs that survive: kill -9 and a resume, SIGINT and SIGTERM mid-run (one line, the status, a resume that ends where
an uninterrupted run ends). The one-line errors of bad files, arguments and checkpoints: test_bad_inputs*.py."""
import json
import os
import signal
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import PART1, REPO_ROOT, generated_data, history_without_time, run_dirs, wait_for
from dgmkit.runs.checkpoints import load_checkpoint
from train_torch import main, parse_args


# Long enough epochs (about a second) that a signal lands inside one.
SLOW = ["--epochs", "3", "--batch_size", "16", "--num_filters", "16", "--z_dim", "3", "--sample_epochs", "2",
        "--final_iw_samples", "0", "--device", "cpu", "--num_workers", "0", "--no-progress_bar"]


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory):
    return generated_data(tmp_path_factory.mktemp("slow_data"), 640, 64, seed=3)


@pytest.fixture(scope="module")
def uninterrupted(slow_data, tmp_path_factory):
    logs = tmp_path_factory.mktemp("uninterrupted")
    main(parse_args(["--data_dir", str(slow_data), "--log_dir", str(logs), *SLOW]))
    return run_dirs(logs)[0]


def start_training(data_dir, log_dir):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, str(PART1 / "train_torch.py"), "--data_dir", str(data_dir),
                             "--log_dir", str(log_dir), *SLOW], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_first_epoch(process, log_dir):
    """Block until epoch 1's last.pt exists: the run is then in epoch 2 (or saving epoch 1's sample grid).

    No fixed sleep: the signal follows the checkpoint within a poll interval, so even a much faster
    machine is still inside the 3-epoch run; the callers also check the run was really cut short.
    """
    return wait_for(process, log_dir, "*/checkpoints/last.pt").parent.parent


def resume(run_dir):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(PART1 / "train_torch.py"), "--resume", str(run_dir)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def assert_same_as_uninterrupted(run_dir, reference):
    assert history_without_time(run_dir) == history_without_time(reference)
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference))
    assert ours["test_bpd"] == theirs["test_bpd"] and ours["best_epoch"] == theirs["best_epoch"]
    assert not list(run_dir.rglob("*.tmp"))
    # One TensorBoard point per epoch: the resumed session's purge_step hid the interrupted duplicates.
    events = EventAccumulator(str(run_dir)).Reload()
    assert [e.step for e in events.Scalars("bpd/train")] == [1, 2, 3]
    assert [e.value for e in events.Scalars("bpd/val")] == pytest.approx([h["val_bpd"] for h in
                                                                          history_without_time(reference)])


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(slow_data, uninterrupted, tmp_path):
    process = start_training(slow_data, tmp_path)
    run_dir = wait_for_first_epoch(process, tmp_path)
    process.kill()  # SIGKILL: no handler runs
    process.wait()
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] < 3  # really cut short
    result = resume(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming at epoch" in result.stdout
    assert_same_as_uninterrupted(run_dir, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly(signum, status, slow_data, uninterrupted, tmp_path):
    """Both signals stop cleanly; the SIGINT run is also resumed (SIGKILL's test resumes too)."""
    process = start_training(slow_data, tmp_path)
    run_dir = wait_for_first_epoch(process, tmp_path)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr[-3000:]
    assert "Traceback" not in stderr and f"--resume {run_dir}" in stderr
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert 1 <= last["epoch"] < 3  # stopped mid-run, after a checkpoint
    assert len([line for line in stderr.splitlines() if line.strip()]) == 1
    assert len(history_without_time(run_dir)) == last["epoch"]  # history stops at the checkpoint's epoch
    if signum == signal.SIGTERM:
        return
    result = resume(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_as_uninterrupted(run_dir, uninterrupted)
