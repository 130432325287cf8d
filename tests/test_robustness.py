"""Runs that survive: kill -9 and resume, SIGINT/SIGTERM, the NaN check, gradient clipping, unsafe checkpoints,
resuming a finished run, flags typed on a resume. The one-line errors of bad files, arguments and checkpoints:
test_bad_inputs.py and test_bad_inputs_resume.py."""
import json
import math
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_torch
from conftest import PART1, REPO_ROOT, SMALL, RunsCode, generated_data, history_without_time, run_dirs, wait_for
from dgmkit.engine import session
from dgmkit.errors import NonFiniteLossError
from dgmkit.runs.checkpoints import CheckpointError, load_checkpoint
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


def test_deferred_nan_check_reports_the_same_step(monkeypatch):
    """The GPU path checks for a NaN loss once per epoch (no per-step sync) but names the same step."""
    model = train_torch.VAE(num_filters=4, z_dim=2, lr=1e-3)
    optimizer = torch.optim.Adam(model.parameters())
    batches = [(torch.randint(0, 16, (4, 1, 28, 28)), torch.zeros(4)) for _ in range(6)]
    forward = train_torch.VAE.forward
    calls = {"n": 0}

    def poisoned(self, imgs):
        calls["n"] += 1
        L_rec, L_reg, bpd = forward(self, imgs)
        return (L_rec, L_reg, bpd * math.inf) if calls["n"] in (4, 6) else (L_rec, L_reg, bpd)

    monkeypatch.setattr(train_torch.VAE, "forward", poisoned)
    for every_step, expected_calls in ((True, 4), (False, 6)):
        calls["n"] = 0
        with pytest.raises(NonFiniteLossError, match="training, step 4$"):
            train_torch.train_vae(model, batches, optimizer, check_every_step=every_step)
        assert calls["n"] == expected_calls  # per step: stops at once; deferred: finishes the epoch


def test_grad_clip_is_applied(tiny_data, tmp_path, monkeypatch):
    norms = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: norms.append(max_norm) or
                        clip(params, max_norm))
    main(parse_args(["--data_dir", str(tiny_data), "--log_dir", str(tmp_path), *SMALL, "--grad_clip", "0.5"]))
    assert norms == [0.5] * 10  # 5 steps per epoch, 2 epochs


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


def test_resuming_a_finished_run_changes_nothing(finished_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    metrics = main(parse_args(["--resume", str(finished_run), "--no-progress_bar"]))
    assert metrics == json.loads((finished_run / "metrics.json").read_text())
    assert "already finished its 2 epochs" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before


# ---- flags a user typed are honoured, even when they equal the default ----------------------------------

def test_resume_honours_a_typed_value_equal_to_the_default(finished_run):
    """--epochs 80 (the default) on a 2-epoch run means 80, not "not given"."""
    merged, state = session.resumed_settings(parse_args(["--resume", str(finished_run), "--epochs", "80"]))
    assert state["epoch"] == 2 and merged.epochs == 80
    merged, _ = session.resumed_settings(parse_args(["--resume", str(finished_run)]))
    assert merged.epochs == 2  # not typed: the run's own value


def test_the_last_epoch_always_gets_a_sample_grid(finished_run):
    """SMALL saves no scheduled grid (--sample_epochs with no value): the final model still gets one."""
    assert sorted(p.name for p in finished_run.glob("samples_epoch_*.png")) == ["samples_epoch_002.png"]


def test_resume_rewrites_args_json_with_the_new_settings(tiny_data, tmp_path):
    main(parse_args(["--data_dir", str(tiny_data), "--log_dir", str(tmp_path), *SMALL, "--epochs", "1"]))
    run_dir = run_dirs(tmp_path)[0]
    main(parse_args(["--resume", str(run_dir), "--epochs", "2", "--no-progress_bar"]))
    args = json.loads((run_dir / "args.json").read_text())
    assert args["epochs"] == 2 and args["resume"] == str(run_dir)
    assert len(history_without_time(run_dir)) == 2
