"""Runs that survive: kill -9 and resume, SIGINT/SIGTERM, NaN losses, bad files and arguments, unsafe checkpoints."""
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import run_folder
import train_torch
from checkpoints import CheckpointError, load_checkpoint
from conftest import PART1, REPO_ROOT, error_line, generated_data, make_images, run_dirs, write_idx
from loops import NonFiniteLossError
from train_torch import cli, main, parse_args

SMALL = ["--epochs", "2", "--batch_size", "64", "--num_filters", "8", "--z_dim", "2", "--sample_epochs",
         "--final_iw_samples", "0", "--device", "cpu", "--no-progress_bar"]
# Long enough epochs (about a second) that a signal lands inside one.
SLOW = ["--epochs", "3", "--batch_size", "16", "--num_filters", "16", "--z_dim", "3", "--sample_epochs", "2",
        "--final_iw_samples", "0", "--device", "cpu", "--num_workers", "0", "--no-progress_bar"]


def history_without_time(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "history.jsonl").read_text().splitlines()]


def run_cli(argv):
    with pytest.raises(SystemExit) as info:
        cli([str(a) for a in argv])
    return info.value.code


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory):
    return generated_data(tmp_path_factory.mktemp("slow_data"), 640, 64, seed=3)


@pytest.fixture(scope="module")
def uninterrupted(slow_data, tmp_path_factory):
    logs = tmp_path_factory.mktemp("uninterrupted")
    main(parse_args(["--data_dir", str(slow_data), "--log_dir", str(logs), *SLOW]))
    return run_dirs(logs)[0]


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    logs = tmp_path_factory.mktemp("finished")
    main(parse_args(["--data_dir", str(tiny_data), "--log_dir", str(logs), *SMALL]))
    return run_dirs(logs)[0]


def start_training(data_dir, log_dir):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, str(PART1 / "train_torch.py"), "--data_dir", str(data_dir),
                             "--log_dir", str(log_dir), *SLOW], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_first_epoch(process, log_dir, timeout=120):
    """Block until epoch 1's last.pt exists: the run is then in epoch 2 (or saving epoch 1's sample grid).

    No fixed sleep: the signal follows the checkpoint within a poll interval, so even a much faster
    machine is still inside the 3-epoch run; the callers also check the run was really cut short.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended early: {process.communicate()[1][-2000:]}")
        lasts = list(Path(log_dir).glob("*/checkpoints/last.pt"))
        if lasts:
            return lasts[0].parent.parent
        time.sleep(0.005)
    pytest.fail("no checkpoint within the timeout")


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
    assert [e.step for e in events.Scalars("train/bpd")] == [1, 2, 3]
    assert [e.value for e in events.Scalars("val/bpd")] == pytest.approx([h["val_bpd"] for h in
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


def test_nan_loss_stops_and_keeps_best_finite(tiny_data, tmp_path, monkeypatch, capsys):
    """The loss turns NaN at the 3rd forward call of epoch 2 (5 training steps per epoch)."""
    calls = {"n": 0}
    forward = train_torch.VAE.forward

    def poisoned(self, imgs):
        L_rec, L_reg, bpd = forward(self, imgs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 5 + 3:
                return L_rec * math.nan, L_reg, bpd * math.nan
        return L_rec, L_reg, bpd

    monkeypatch.setattr(train_torch.VAE, "forward", poisoned)
    argv = ["--data_dir", tiny_data, "--log_dir", tmp_path, *SMALL, "--epochs", "3"]
    assert run_cli(argv) == 1
    message = error_line(capsys)
    assert "non-finite loss in epoch 2 (training, step 3)" in message and "--grad_clip" in message
    run_dir = run_dirs(tmp_path)[0]
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == 1 and load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in best["model"].values())
    assert not (run_dir / "metrics.json").exists()


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


def test_huge_learning_rate_diverges_with_a_message(tiny_data, tmp_path, capsys):
    assert run_cli(["--data_dir", tiny_data, "--log_dir", tmp_path, *SMALL, "--lr", "1e12"]) == 1
    assert "non-finite loss in epoch" in error_line(capsys)


def test_grad_clip_is_applied(tiny_data, tmp_path, monkeypatch):
    norms = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: norms.append(max_norm) or
                        clip(params, max_norm))
    main(parse_args(["--data_dir", str(tiny_data), "--log_dir", str(tmp_path), *SMALL, "--grad_clip", "0.5"]))
    assert norms == [0.5] * 10  # 5 steps per epoch, 2 epochs


# ---- bad input: one line, exit status 2, nothing half-written ----------------------------------------

def test_truncated_idx_file_names_the_file(tmp_path, capsys):
    images, labels = make_images(50, seed=0)
    write_idx(tmp_path, images, labels, images[:10], labels[:10])
    path = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    assert run_cli(["--data_dir", tmp_path, "--log_dir", tmp_path / "logs", *SMALL]) == 2
    message = error_line(capsys)
    assert str(path) in message and "truncated" in message


def test_garbage_idx_file_names_the_file(tmp_path, capsys):
    images, labels = make_images(50, seed=0)
    write_idx(tmp_path, images, labels, images[:10], labels[:10])
    path = tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"<html>not found</html>")
    assert run_cli(["--data_dir", tmp_path, "--log_dir", tmp_path / "logs", *SMALL]) == 2
    assert str(path) in error_line(capsys)


def test_empty_idx_file_names_the_file(tmp_path, capsys):
    images, labels = make_images(50, seed=0)
    write_idx(tmp_path, images, labels, images[:0], labels[:0])  # a valid header promising 0 test images
    assert run_cli(["--data_dir", tmp_path, "--log_dir", tmp_path / "logs", *SMALL]) == 2
    assert f"{tmp_path / 'FashionMNIST' / 'raw' / 't10k-images-idx3-ubyte'} holds no images" in error_line(capsys)


def test_unwritable_log_dir(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert run_cli(["--data_dir", tiny_data, "--log_dir", blocker / "logs", *SMALL]) == 2
    assert f"--log_dir {blocker / 'logs'}" in error_line(capsys)


def test_resume_without_checkpoint(tmp_path, capsys):
    assert run_cli(["--resume", tmp_path]) == 2
    assert "no checkpoint" in error_line(capsys)


def test_resume_with_another_model_names_both_values(finished_run, capsys):
    assert run_cli(["--resume", finished_run, "--z_dim", "7"]) == 2
    message = error_line(capsys)
    assert "z_dim=2" in message and "z_dim=7" in message


def test_resume_with_conflicting_setting(finished_run, capsys):
    assert run_cli(["--resume", finished_run, "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs from the resumed run's 0.001" in error_line(capsys)


def test_truncated_checkpoint_names_the_file(finished_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    data = (finished_run / "checkpoints" / "last.pt").read_bytes()
    (run_dir / "checkpoints" / "last.pt").write_bytes(data[: len(data) // 2])
    assert run_cli(["--resume", run_dir]) == 2
    message = error_line(capsys)
    assert str(run_dir / "checkpoints" / "last.pt") in message and "truncated or corrupt" in message


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    path = run_dir / "checkpoints" / "last.pt"
    torch.save({"model": {}, "args": {"z_dim": 20, "num_filters": 32}, "payload": RunsCode(marker)}, path)
    with open(tmp_path / "plain.pkl", "wb") as f:  # and as a plain (non-zip) pickle
        pickle.dump({"payload": RunsCode(marker)}, f, protocol=2)
    for candidate in (path, tmp_path / "plain.pkl"):
        with pytest.raises(CheckpointError, match="refusing to load"):
            load_checkpoint(candidate)
    assert run_cli(["--resume", run_dir]) == 2
    assert "refusing to load" in error_line(capsys)
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
    merged, state = run_folder.resumed_args(parse_args(["--resume", str(finished_run), "--epochs", "80"]))
    assert state["epoch"] == 2 and merged["epochs"] == 80
    merged, _ = run_folder.resumed_args(parse_args(["--resume", str(finished_run)]))
    assert merged["epochs"] == 2  # not typed: the run's own value


def test_resume_refuses_a_typed_default_that_contradicts_the_run(tiny_data, tmp_path, capsys):
    main(parse_args(["--data_dir", str(tiny_data), "--log_dir", str(tmp_path), *SMALL, "--epochs", "1",
                     "--lr", "5e-4"]))
    assert run_cli(["--resume", run_dirs(tmp_path)[0], "--lr", "1e-3", "--epochs", "2"]) == 2
    assert "--lr 0.001 differs from the resumed run's 0.0005" in error_line(capsys)


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
