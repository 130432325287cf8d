"""Issue 25's odd environments, through the real scripts in fresh interpreters: a path holding a newline (cause 17),
more DataLoader workers than CPUs (cause 18), and a busy CPU core (cause 25). Every failure is one line on stderr,
counted here as it reaches the user (Python's warnings are not silenced, unlike conftest.run_script's); the unit
checks live with their modules (tests/cli/test_runner.py, tests/cli/test_startup.py, tests/data/test_datasets.py,
tests/engine/test_hardware.py)."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import PART1, REPO_ROOT, generated_data, only_run_dir

CPUS = sorted(os.sched_getaffinity(0))
GAN = ["--epochs", "1", "--sample_epochs", "--batch_size", "32", "--device", "cpu", "--no-progress_bar"]
REALNVP = ["--epochs", "1", "--sample_epochs", "--hidden_channels", "4", "--num_blocks", "1", "--couplings", "1",
           "--final_draws", "1", "--device", "cpu", "--no-progress_bar"]
VAE = ["--epochs", "1", "--sample_epochs", "--num_filters", "8", "--z_dim", "2", "--final_iw_samples", "0",
       "--device", "cpu", "--no-progress_bar"]


def script(name, *args, threads="1", cpus=None):
    """part1/<name> in a fresh interpreter, warnings as a user sees them; OMP_NUM_THREADS=threads (None: unset, so
    the script chooses), pinned to `cpus` when given. Returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "OMP_NUM_THREADS")}
    env.update({"OMP_NUM_THREADS": threads} if threads else {})
    return subprocess.run([sys.executable, str(PART1 / name), *map(str, args)], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=300,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)


def one_error_line(result, status=2):
    """The single stderr line of a failed run (fails on a second line: a warning, a traceback, a split message)."""
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr.endswith("\n"), lines
    return lines[0]


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """72 training, 8 validation and 20 test images in MNIST's folder (the 2019 models' default dataset)."""
    return generated_data(tmp_path_factory.mktemp("mnist"), 80, 20, seed=11, folder="MNIST")


# ---- cause 17: a path holding a newline (the message quotes it; the newline is escaped) --------------------------

@pytest.mark.slow
def test_a_resume_folder_holding_a_newline_is_a_one_line_error(tmp_path):
    line = one_error_line(script("train_gan.py", "--resume", tmp_path / "run\nfolder"))
    assert line.startswith("train_gan.py: error: --resume ") and "run\\nfolder" in line


@pytest.mark.slow
def test_a_data_dir_holding_a_newline_is_a_one_line_error(tmp_path):
    data = generated_data(tmp_path / "da\nta", 80, 20, seed=0)
    images = data / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])  # truncated: refused before anything is read or downloaded
    line = one_error_line(script("train_torch.py", "--data_dir", data, "--log_dir", tmp_path / "logs", *VAE))
    assert line.startswith("train_torch.py: error: ") and "da\\nta" in line and "truncated" in line
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_a_log_dir_holding_a_newline_is_a_one_line_error(tmp_path, mnist):
    log_dir = tmp_path / "lo\ngs"
    log_dir.write_text("a file where the runs' folder should be\n")
    line = one_error_line(script("train_realnvp.py", "--data_dir", mnist, "--log_dir", log_dir, *REALNVP))
    assert line == f"train_realnvp.py: error: cannot create a run folder in --log_dir {tmp_path}/lo\\ngs: File exists; " \
                   "choose a writable folder"


# ---- cause 18: more workers than CPUs (said once, on stdout; torch's multi-line warning never printed) ----------

@pytest.mark.slow
def test_more_workers_than_cpus_is_one_note_and_no_warning(tmp_path, mnist):
    many = len(CPUS) + 3
    result = script("train_gan.py", "--data_dir", mnist, "--log_dir", tmp_path, "--num_workers", many, *GAN)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    note = (f"note: --num_workers {many} is more than the {len(CPUS)} CPUs this process may use; using {len(CPUS)} "
            "worker processes")
    assert result.stdout.splitlines().count(note) == 1
    assert json.loads((only_run_dir(tmp_path) / "args.json").read_text())["num_workers"] == many  # as typed
    # Cause 25's override, seen on the way: OMP_NUM_THREADS=1 (script's default here) is taken, not measured.
    assert "| threads 1 (explicit: OMP_NUM_THREADS)  |" in result.stdout


@pytest.mark.slow
def test_more_workers_than_cpus_leave_a_failure_one_line(tmp_path, mnist):
    (tmp_path / "logs").write_text("not a folder\n")
    result = script("train_gan.py", "--data_dir", mnist, "--log_dir", tmp_path / "logs", "--num_workers",
                    len(CPUS) + 3, *GAN)
    assert "cannot create a run folder" in one_error_line(result)


# ---- cause 25: a busy core (the thread count is measured, printed first, recorded and used) ----------------------

@pytest.mark.slow  # it keeps a core busy on purpose
@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs: one busy, one free")
def test_a_busy_core_makes_the_run_take_one_thread(tmp_path, mnist):
    """Two CPUs, one spinning in another process: torch's default (2 threads) waits at every barrier for the busy
    core; the probe sees it and the GAN trains on 1 thread. Not silenced by OMP_NUM_THREADS (unset here)."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            preexec_fn=lambda: os.sched_setaffinity(0, CPUS[:1]))
    try:
        result = script("train_gan.py", "--data_dir", mnist, "--log_dir", tmp_path, *GAN, threads=None, cpus=CPUS[:2])
    finally:
        busy.kill()
        busy.wait()
    assert result.returncode == 0 and result.stderr == "", result.stderr
    first = result.stdout.splitlines()[0]
    # What the probe measures depends on how the machine shares the busy core (seen here: 1.6x-24x slower at 2
    # threads under load, but 0.6x once, on an otherwise idle VM), so the rule that turns timings into a count is
    # tested with given timings in tests/engine/test_hardware.py; here: a measured choice, printed, recorded, used.
    found = re.search(r"\| threads (\d) \(auto: 2 threads took (\d+\.\d)x the time of 1(: a busy CPU)?\)  \|", first)
    assert found, first
    threads, ratio, busy = int(found.group(1)), float(found.group(2)), found.group(3)
    assert (threads == 1) == bool(busy) and ratio > 0, first
    run_dir = only_run_dir(tmp_path)
    assert json.loads((run_dir / "args.json").read_text())["auto_choices"]["threads"] == threads  # for a resume
    assert json.loads((run_dir / "metrics.json").read_text())["machine"]["threads"] == threads  # and what trained

