"""Bad inputs and interruptions of a fresh part1/train_torch.py run: arguments, data files, --log_dir, failures
inside training, SIGINT/SIGTERM. The contract every case keeps (one stderr line, exit status, nothing lost or
half-written) is in cli_contract.py; a --resume: test_bad_inputs_resume.py; evaluate.py, benchmark.py,
make_figures.py and sweep.py: test_bad_inputs_runs.py.

Each case runs the CLI in-process; only the signal cases start a real process.
"""
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import train_torch
from cli_contract import Case, argparse_cases, context, fail_writes, offline, params, run_case
from conftest import PART1, REPO_ROOT, SMALL, history_without_time, make_images, only_run_dir, wait_for, write_idx
from dgmkit.data.datasets import RAW_FILES
from dgmkit.runs.checkpoints import load_checkpoint

# For the signal cases (on the 300-image tiny_data): 17 steps per epoch, so that a signal sent within
# milliseconds of a file appearing lands in the same epoch, and enough epochs that the run is still going.
SLOW = ["--epochs", "6", "--batch_size", "16", "--num_filters", "8", "--z_dim", "2", "--sample_epochs",
        "--final_iw_samples", "0", "--device", "cpu", "--num_workers", "0", "--no-progress_bar"]
RAW = "{tmp}/data/FashionMNIST/raw"


def train_argv(*flags, data=lambda c: c.data, logs=lambda c: c.logs):
    """A fresh SMALL run (on micro_data unless data says otherwise) into ctx.logs, with extra flags."""
    return lambda c: ["--data_dir", data(c), "--log_dir", logs(c), *SMALL, *flags]


def own_data(damage=None, num_test=10):
    """Setup: 50 training and num_test test images under {tmp}/data, then damage(raw folder) applied."""
    def setup(c):
        images, labels = make_images(50, seed=0)
        write_idx(c.tmp / "data", images, labels, images[:num_test], labels[:num_test])
        if damage:
            damage(c.tmp / "data" / "FashionMNIST" / "raw")
    return setup


def cut(name, size):
    return lambda raw: (raw / name).write_bytes((raw / name).read_bytes()[:size])


def poison_training_forward(at_call):
    """Setup: from the at_call-th training forward pass on (counted from 1), the loss is NaN."""
    def setup(c):
        forward, calls = train_torch.VAE.forward, []

        def poisoned(self, imgs):
            L_rec, L_reg, bpd = forward(self, imgs)
            if self.training and (calls.append(1) or len(calls) >= at_call):
                return L_rec * math.nan, L_reg, bpd * math.nan
            return L_rec, L_reg, bpd
        c.mp.setattr(train_torch.VAE, "forward", poisoned)
    return setup


def disk_full_in_replace_after_epoch_1(c):
    """Epoch 1 writes best.pt and last.pt; the next checkpoint's rename fails with ENOSPC."""
    seen = []
    fail_writes(c.mp, errno.ENOSPC, lambda path: path.suffix == ".pt" and (seen.append(path) or len(seen) > 2))


def disk_full_in_torch_save_after_epoch_1(c):
    """The third checkpoint (epoch 2's first) runs out of space half-way through torch.save."""
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *args, **kwargs)
    c.mp.setattr(torch, "save", save)  # torch's own: the checkpoint writer looks it up at call time


def checkpoints_hold_epoch_1(c):
    run_dir = only_run_dir(c.logs)
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(run_dir / "checkpoints" / name)
        assert state["epoch"] == 1, name
        assert all(torch.isfinite(t).all() for t in state["model"].values()), name
    assert not (run_dir / "metrics.json").exists()


def names_the_checkpoint_folder(c):
    assert f"cannot write {only_run_dir(c.logs) / 'checkpoints'}/" in c.line
    checkpoints_hold_epoch_1(c)


def nothing_saved_from_a_diverged_model(c):
    run_dir = only_run_dir(c.logs)
    assert not list((run_dir / "checkpoints").iterdir()) and not (run_dir / "metrics.json").exists()


TRAIN_CASES = [
    # argparse: refused before anything is read or written (no --log_dir created)
    *argparse_cases(train_argv, [
        ("seed-negative", "--seed", "-1", "between 0 and 4294967295"), ("seed-above-2**32-1", "--seed", "4294967296"),
        ("seed-text", "--seed", "x"), ("lr-zero", "--lr", "0"), ("lr-negative", "--lr", "-0.1"),
        ("lr-nan", "--lr", "nan"), ("lr-infinite", "--lr", "inf", "finite number > 0"),
        ("batch-size-zero", "--batch_size", "0"), ("batch-size-fraction", "--batch_size", "1.5", "integer"),
        ("epochs-negative", "--epochs", "-1"), ("epochs-text", "--epochs", "ten", "integer"),
        ("z-dim-zero", "--z_dim", "0"), ("num-filters-negative", "--num_filters", "-1"),
        ("sample-epochs-negative", "--sample_epochs", "-3"), ("device-tpu", "--device", "tpu", "tpu"),
        ("flow-unknown", "--flow", "maf", "maf"), ("objective-unknown", "--objective", "vlb", "vlb"),
        ("precision-unknown", "--precision", "fp16", "fp16"), ("compile-unknown", "--compile", "maybe", "maybe")]),
    # checked before a run folder is made
    Case("z-dim-does-not-fit", train_argv("--z_dim", "1000000000"), 2, ("does not fit", "--z_dim")),
    Case("num-filters-does-not-fit", train_argv("--num_filters", "10000000"), 2, ("does not fit", "--num_filters")),
    Case("device-cuda-without-gpu", train_argv("--device", "cuda"), 2, ("no CUDA device",), needs_no_cuda=True),
    Case("data-dir-absent", train_argv(data=lambda c: c.tmp / "nowhere"), 2,
         ("FashionMNIST not found in {tmp}/nowhere/FashionMNIST/raw", *RAW_FILES), setup=lambda c: offline(c.mp)),
    Case("data-dir-empty", train_argv(data=lambda c: c.tmp / "empty"), 2,
         ("FashionMNIST not found in {tmp}/empty/FashionMNIST/raw",),
         setup=lambda c: (offline(c.mp), (c.tmp / "empty").mkdir())),
    Case("idx-file-truncated", train_argv(data=lambda c: c.tmp / "data"), 2,
         (f"{RAW}/train-images-idx3-ubyte is truncated",), setup=own_data(cut("train-images-idx3-ubyte", 5000))),
    Case("idx-file-garbage", train_argv(data=lambda c: c.tmp / "data"), 2, (f"{RAW}/t10k-labels-idx1-ubyte",),
         setup=own_data(lambda raw: (raw / "t10k-labels-idx1-ubyte").write_bytes(b"<html>not found</html>"))),
    Case("idx-file-empty", train_argv(data=lambda c: c.tmp / "data"), 2,
         (f"{RAW}/t10k-images-idx3-ubyte holds no images",), setup=own_data(num_test=0)),  # a valid header, 0 images
    Case("log-dir-under-a-file", train_argv(logs=lambda c: c.tmp / "a_file" / "logs"), 2,
         ("--log_dir {tmp}/a_file/logs",), setup=lambda c: (c.tmp / "a_file").write_text("not a folder")),
    Case("run-name-taken", train_argv("--run_name", "run", logs=lambda c: c.tmp), 2,
         ("already holds a run named run",), setup=lambda c: shutil.copytree(c.finished, c.tmp / "run")),
    # failures inside training: what was saved before stays loadable
    Case("disk-full-renaming-epoch-2-checkpoint", train_argv(), 2, ("No space left on device",),
         setup=disk_full_in_replace_after_epoch_1, may_change=("logs", "logs/*"), check=names_the_checkpoint_folder),
    Case("disk-full-writing-epoch-2-checkpoint", train_argv(), 2, ("No space left on device",),
         setup=disk_full_in_torch_save_after_epoch_1, may_change=("logs", "logs/*"), check=names_the_checkpoint_folder),
    Case("nan-loss-in-epoch-1", train_argv(), 1, ("non-finite loss in epoch 1", "no epoch finished"),
         never_says=("holds the last finite epoch",), setup=poison_training_forward(1), may_change=("logs", "logs/*"),
         check=nothing_saved_from_a_diverged_model),
    # micro_data: 2 training steps per epoch, so the 4th training forward pass is epoch 2's second step
    Case("nan-loss-in-epoch-2", train_argv("--epochs", "3"), 1, ("non-finite loss in epoch 2 (training, step 2)",
         "--grad_clip"), setup=poison_training_forward(4), may_change=("logs", "logs/*"),
         check=checkpoints_hold_epoch_1),
    Case("lr-huge-diverges", train_argv("--lr", "1e12"), 1, ("non-finite loss in epoch",),
         may_change=("logs", "logs/*")),
]


@pytest.fixture
def train_ctx(micro_data, finished_run, tmp_path, monkeypatch):
    return context(tmp_path, monkeypatch, data=micro_data, finished=finished_run)


@pytest.mark.parametrize("case", params(TRAIN_CASES))
def test_train_torch_bad_input(case, train_ctx, capsys):
    run_case(case, train_torch.cli, "train_torch.py", train_ctx, capsys)


def test_train_torch_records_a_relative_data_dir_from_the_run_folder(micro_data, tmp_path, monkeypatch):
    """A run started elsewhere with --data_dir data_rel records the folder it read relative to the run folder
    (dgmkit/runs/paths.py), so a resume from any working folder finds it."""
    shutil.copytree(micro_data, tmp_path / "data_rel")
    monkeypatch.chdir(tmp_path)
    train_torch.cli(["--data_dir", "data_rel", "--log_dir", "logs", *SMALL, "--epochs", "1"])
    run_dir = only_run_dir(tmp_path / "logs")
    assert json.loads((run_dir / "args.json").read_text())["data_dir"] == "../../data_rel"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["args"]["data_dir"] == "../../data_rel"
    monkeypatch.chdir(run_dir)
    train_torch.cli(["--resume", ".", "--epochs", "2"])
    assert len(history_without_time(run_dir)) == 2


def start_slow_run(data_dir, log_dir, cwd):
    """train_torch.py as a user starts it (no PYTHONWARNINGS: any warning would break the one-line stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the machine's cores are shared with the in-process cases
    return subprocess.Popen([sys.executable, str(PART1 / "train_torch.py"), "--data_dir", str(data_dir),
                             "--log_dir", str(log_dir), *SLOW], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_train_torch_sigint_before_the_first_epoch(tiny_data, tmp_path):
    process = start_slow_run(tiny_data, tmp_path / "logs", REPO_ROOT)
    run_dir = wait_for(process, tmp_path / "logs", "*/args.json").parent
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 130 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("train_torch.py: ") and "SIGINT" in lines[0]
    assert "nothing to resume" in lines[0] and str(run_dir) in lines[0], lines[0]
    assert not (run_dir / "checkpoints" / "last.pt").exists() and not list(run_dir.rglob("*.tmp"))


@pytest.mark.slow
def test_train_torch_sigterm_mid_run_gives_a_working_resume_command(tiny_data, tmp_path):
    """Started from part1/: the message's `python <script> --resume <run>` works from there."""
    process = start_slow_run(tiny_data, tmp_path / "logs", PART1)
    run_dir = wait_for(process, tmp_path / "logs", "*/checkpoints/last.pt").parent.parent
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 143 and len(lines) == 1, err[-3000:]
    line = lines[0]
    assert line.startswith("train_torch.py: ") and "SIGTERM" in line and f"--resume {run_dir}" in line, line
    script = line.split("python ", 1)[1].split(" --resume")[0]
    assert script.endswith("train_torch.py") and (PART1 / script).is_file(), line
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert 1 <= last["epoch"] < 6 and f"holds epoch {last['epoch']}" in line
    history = (run_dir / "history.jsonl").read_text().splitlines()
    assert len(history) >= last["epoch"] and not list(run_dir.rglob("*.tmp"))
