"""Issue 25's causes of lost or wrong run files, each with real processes, signals and file-size limits: an
interrupted test of an extended run (#1), a grid lost to a kill after the last checkpoint (#6), a checkpoint write
refused by the storage (#7), a relative --log_dir on resume (#5), and messages naming only the script's own flags
(#21). The lock file (#4): tests/runs/test_folder.py."""
import json
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (GAN_SMALL, PART1, REALNVP_SMALL, REPO_ROOT, SMALL, history_without_time, run_script,
                      train_2019)
from dgmkit.runs.checkpoints import load_checkpoint
from dgmkit.runs.folder import RunDir

pytestmark = pytest.mark.slow  # real trainings in fresh interpreters, each a few seconds

TIMING = {"wall_time_s", "seconds_per_epoch", "seconds"}  # the only fields two runs of one seed may differ in
# The VAE's cheap run, pinned to fp32 (auto may pick bf16), with a test phase long enough (an IW bound of K 4,000
# on 20 images) for a signal to land in it.
VAE = [*SMALL, "--precision", "fp32", "--final_iw_samples", "4000"]


def without_timing(record):
    """A JSON record without its timing fields, at any depth."""
    if isinstance(record, dict):
        return {k: without_timing(v) for k, v in record.items() if k not in TIMING}
    return [without_timing(v) for v in record] if isinstance(record, list) else record


def files_of(run):
    """{relative path: bytes} of a run folder's files, except TensorBoard's event files (their wall-clock stamps
    differ between any two runs) and the lock; the JSON files without their timing fields (and args.json without
    "resume", which a resumed run sets, and the measurements behind its hardware choices)."""
    found = {}
    for path in sorted(Path(run).rglob("*")):
        name = path.relative_to(run).as_posix()
        if not path.is_file() or name.startswith("events.out") or name == ".lock":
            continue
        if path.suffix == ".json":
            found[name] = without_timing(json.loads(path.read_text()))
            if name == "args.json":
                found[name].pop("resume")  # a resumed run records that it was resumed: "."
                found[name].pop("run_name")  # the two runs' own names
                found[name]["auto_choices"].pop("why")  # measured speeds, e.g. of 1 thread against 2
        elif path.name == "history.jsonl":
            found[name] = history_without_time(run)
        elif path.suffix == ".pt":
            state = load_checkpoint(path, required=())
            found[name] = (state["epoch"], {k: v.sum().item() for k, v in state["model"].items()})
        else:
            found[name] = path.read_bytes()
    return found


def vae(data, logs, *flags, name="r"):
    return run_script([PART1 / "train_torch.py", "--data_dir", data, "--log_dir", logs, "--run_name", name, *VAE,
                       *flags])


def test_an_interrupted_test_of_an_extended_run_is_redone(micro_data, tmp_path):
    """#1: 1 epoch, --resume --epochs 2, SIGINT while it tests, --resume again: the run must not look finished with
    epoch 1's metrics; the second resume tests epoch 2, and the folder ends as the uninterrupted extension's."""
    for name in ("plain", "cut"):
        assert vae(micro_data, tmp_path, "--epochs", "1", name=name).returncode == 0
    assert run_script([PART1 / "train_torch.py", "--resume", tmp_path / "plain", "--epochs", "2"]).returncode == 0

    cut = tmp_path / "cut"
    process = subprocess.Popen([sys.executable, str(PART1 / "train_torch.py"), "--resume", str(cut), "--epochs", "2"],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120  # the epoch-2 grid is written after its checkpoint, just before the test phase
    while not (cut / "samples_epoch_002.png").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert json.loads((cut / "metrics.json").read_text())["epochs"] == 1  # epoch 1's test: stale, not finished
    assert not RunDir(cut).is_finished()

    again = run_script([PART1 / "train_torch.py", "--resume", cut])
    assert again.returncode == 0, again.stderr
    assert "all 2 epochs trained: testing" in again.stdout and "already finished" not in again.stdout
    assert files_of(cut) == files_of(tmp_path / "plain")
    assert json.loads((cut / "metrics.json").read_text())["epochs"] == 2
    done = run_script([PART1 / "train_torch.py", "--resume", cut])
    assert done.returncode == 0 and "already finished its 2 epochs and was tested" in done.stdout


@pytest.mark.parametrize("script, flags, grid", [
    ("train_torch.py", VAE[:-1] + ["0"], "samples_epoch_002.png"),
    ("train_gan.py", [*GAN_SMALL, "--epochs", "2"], "samples_epoch_002.png"),
])
def test_a_grid_lost_after_the_last_checkpoint_is_drawn_on_resume(micro_data, mnist_8bit, tmp_path, script, flags,
                                                                  grid):
    """#6: a kill after the last checkpoint is saved and before the last grid (and the test) is written leaves what
    this test leaves: the run's files less the grid and the test's. The resume draws that grid, byte for byte the
    uninterrupted run's (the checkpoint's random state and weights are what it was drawn from)."""
    data = micro_data if script == "train_torch.py" else mnist_8bit
    done = run_script([PART1 / script, "--data_dir", data, "--log_dir", tmp_path, "--run_name", "r", *flags])
    assert done.returncode == 0, done.stderr
    run = tmp_path / "r"
    whole = files_of(run)
    for name in (grid, "metrics.json", "eval_test.json", "interpolation.png", "vae_manifold.png"):
        (run / name).unlink(missing_ok=True)
    resumed = run_script([PART1 / script, "--resume", run])
    assert resumed.returncode == 0, resumed.stderr
    assert files_of(run) == whole


SIZE_LIMIT = 1 << 20  # bytes: more than any file but a checkpoint of these runs


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (SIZE_LIMIT, SIZE_LIMIT))


@pytest.mark.parametrize("script, flags", [
    ("train_torch.py", [*VAE[:-1], "0", "--num_filters", "32"]),
    ("train_realnvp.py", [*REALNVP_SMALL, "--hidden_channels", "24", "--sample_epochs"]),
    ("train_gan.py", [*GAN_SMALL, "--sample_epochs"]),
])
def test_a_checkpoint_the_storage_refuses_is_one_line(micro_data, mnist_8bit, tmp_path, script, flags):
    """#7: `ulimit -f` (EFBIG, as a full disk's ENOSPC) during torch.save, which reports it as a RuntimeError: one
    line naming the checkpoint, exit 2 (not 1, "diverged"), and the previous checkpoint intact. Epoch 1 is written
    without the limit; the resume to epoch 2 runs under it."""
    data = micro_data if script == "train_torch.py" else mnist_8bit
    first = run_script([PART1 / script, "--data_dir", data, "--log_dir", tmp_path, "--run_name", "r", *flags,
                        "--epochs", "1"])
    assert first.returncode == 0, first.stderr
    last = tmp_path / "r" / "checkpoints" / "last.pt"
    assert last.stat().st_size > SIZE_LIMIT  # else the test would not reach the limit
    process = subprocess.run([sys.executable, str(PART1 / script), "--resume", str(tmp_path / "r"), "--epochs", "2"],
                             cwd=REPO_ROOT, capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=240)
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert process.returncode == 2 and len(lines) == 1, process.stderr
    assert "error: cannot write" in lines[0] and "File too large" in lines[0] and ".pt is unchanged" in lines[0]
    assert "/checkpoints/" in lines[0]
    assert load_checkpoint(last, required=())["epoch"] == 1  # the previous checkpoint, intact
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_relative_log_dir_on_resume_is_the_same_folder(finished_run, tmp_path):
    """#5: the run records its log_dir; typing the same folder relatively on resume is no contradiction."""
    logs = tmp_path / "logs"
    shutil.copytree(finished_run, logs / "run")
    (tmp_path / "elsewhere").mkdir()
    resumed = run_script([PART1 / "train_torch.py", "--resume", logs / "run", "--log_dir", "../logs",
                          "--epochs", "3"], cwd=tmp_path / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(logs / "run" / "checkpoints" / "last.pt")["epoch"] == 3
    other = run_script([PART1 / "train_torch.py", "--resume", logs / "run", "--log_dir", "../elsewhere"],
                       cwd=tmp_path / "elsewhere")
    assert other.returncode == 2 and "differs from the resumed run's" in other.stderr


def test_the_resume_refusal_names_only_the_scripts_own_flags(mnist_8bit, tmp_path):
    """#21: the GAN's resume refusal lists the flags a resume may change that train_gan.py has (no
    --final_iw_samples, a VAE flag)."""
    import train_gan
    train_2019(train_gan, GAN_SMALL, mnist_8bit, tmp_path, 1)
    refused = run_script([PART1 / "train_gan.py", "--resume", tmp_path / "r", "--lr", "0.1"])
    assert refused.returncode == 2 and "--lr 0.1 differs from the resumed run's" in refused.stderr
    assert "--epochs" in refused.stderr and "final_iw_samples" not in refused.stderr
