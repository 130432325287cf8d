"""Shared helpers and fixtures of every test folder (tests/, part1/ and report/ are on the import path by pytest.ini,
so `from conftest import ...` works from tests/<wing>/ too): small IDX files written by hand (and as the loaders give
them), the flags of a cheap run and one finished run of them, the 2019 models' cheap runs, finding run folders and
reading their history, waiting on a training process, and capturing one-line errors."""
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
PART1 = REPO_ROOT / "part1"

# One thread count for every run a test starts, in this process and in the scripts it runs: auto measures 1 thread
# against the default on a busy machine, and the count changes the last bits of the sums that tests compare across
# runs. Tests of that choice unset it themselves.
os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))

# A cheap 2-epoch z_dim 2 run on the CPU: no scheduled sample grids, no final IW evaluation, no progress bar.
SMALL = ["--epochs", "2", "--batch_size", "64", "--num_filters", "8", "--z_dim", "2", "--sample_epochs",
         "--final_iw_samples", "0", "--device", "cpu", "--no-progress_bar"]


RAW_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(root, train_images, train_labels, test_images, test_labels, folder="FashionMNIST"):
    """Write uint8 images [N, 28, 28] and labels [N] as the four IDX files under root/<folder>/raw/."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        images = np.asarray(images, dtype=np.uint8)
        labels = np.asarray(labels, dtype=np.uint8)
        image_file, label_file = RAW_NAMES[split]
        # IDX: magic (0x0803 = unsigned byte, 3 dims), then big-endian dims, then the bytes.
        (raw / image_file).write_bytes(struct.pack(">IIII", 0x0803, *images.shape) + images.tobytes())
        (raw / label_file).write_bytes(struct.pack(">II", 0x0801, len(labels)) + labels.tobytes())
    return Path(root)


def make_images(num, seed):
    """Class-dependent blob images (so a VAE has something to learn): uint8 [num, 28, 28], labels [num]."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=num)
    yy, xx = np.mgrid[0:28, 0:28]
    images = np.zeros((num, 28, 28))
    for i, label in enumerate(labels):
        cy, cx = 8 + (label // 4) * 6, 6 + (label % 4) * 5
        images[i] = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (2 + label / 3) ** 2))
    images += rng.normal(0, 12, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8), labels


def generated_data(root, num_train, num_test, seed, folder="FashionMNIST"):
    """make_images for the training set (seed) and the test set (seed + 1), written by write_idx under root/<folder>."""
    return write_idx(root, *make_images(num_train, seed), *make_images(num_test, seed + 1), folder=folder)


def quantized_images(num, seed):
    """make_images as the loaders give them (4-bit levels): images long [num, 1, 28, 28], labels long [num]."""
    from dgmkit.data.datasets import quantize
    images, labels = make_images(num, seed)
    return quantize(torch.as_tensor(images)).unsqueeze(1).long(), torch.as_tensor(labels).long()


@pytest.fixture(scope="module")
def one_thread():
    """Many small tensor ops: one intra-op thread is faster, and much faster on a busy machine (idle OpenMP
    threads spin); restored for the other test modules. Use with pytestmark = usefixtures("one_thread")."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A 300-image training set and a 60-image test set in torchvision's layout."""
    return generated_data(tmp_path_factory.mktemp("tiny_fmnist"), 300, 60, seed=0)


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory):
    """80 training images (72 train / 8 validation: 2 steps per epoch) and 20 test images: cheap epochs."""
    return generated_data(tmp_path_factory.mktemp("micro_data"), 80, 20, seed=5)


@pytest.fixture(scope="session")
def finished_run(micro_data, tmp_path_factory):
    """A finished SMALL run on micro_data (history, checkpoints, metrics.json, the last epoch's samples,
    manifold). Shared by every module: copy it before changing anything in it."""
    import train_torch
    logs = tmp_path_factory.mktemp("finished")
    train_torch.main(train_torch.parse_args(["--data_dir", str(micro_data), "--log_dir", str(logs), *SMALL]))
    return only_run_dir(logs)


# Cheap runs of the 2019 models (train_realnvp.py, train_gan.py) on mnist_8bit: a grid before training, batch 32.
COMMON_2019 = ["--device", "cpu", "--no-progress_bar", "--sample_epochs", "0", "--batch_size", "32"]
REALNVP_SMALL = [*COMMON_2019, "--hidden_channels", "4", "--num_blocks", "1", "--couplings", "1", "--final_draws", "2"]
GAN_SMALL = [*COMMON_2019, "--latent_dim", "8"]


@pytest.fixture(scope="session")
def mnist_8bit(tmp_path_factory):
    """80 training and 20 test images in MNIST's folder (the 2019 models' default dataset, 8 bits)."""
    return generated_data(tmp_path_factory.mktemp("mnist8"), 80, 20, seed=11, folder="MNIST")


def train_2019(script, flags, data, logs, epochs, name="r"):
    """script.main (train_realnvp or train_gan) for `epochs` epochs on data, into logs/<name>; returns its metrics."""
    return script.main(script.parse_args(["--data_dir", str(data), "--log_dir", str(logs), *flags, "--epochs",
                                          str(epochs), "--run_name", name]))


@pytest.fixture
def run_ctx(finished_run, tmp_path, monkeypatch):
    """A copy of the shared finished run at tmp/run, in a cli_contract context (ctx.tmp, ctx.mp, ctx.run)."""
    from cli_contract import context
    shutil.copytree(finished_run, tmp_path / "run")
    return context(tmp_path, monkeypatch, run=tmp_path / "run")


def run_script(args, cwd=REPO_ROOT, timeout=240):
    """Run a part1 script in a fresh interpreter; returns the CompletedProcess (text output)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_dirs(log_dir):
    """The run folders under a --log_dir, sorted by name."""
    return sorted(p for p in Path(log_dir).iterdir() if p.is_dir())


def only_run_dir(log_dir):
    runs = run_dirs(log_dir)
    assert len(runs) == 1, runs
    return runs[0]


def history_without_time(run_dir):
    """A run's history.jsonl records without their wall-clock "seconds" (what reruns must reproduce)."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (Path(run_dir) / "history.jsonl").read_text().splitlines()]


def wait_for(process, log_dir, pattern, timeout=120):
    """Poll (every 2 ms) until a path matching pattern exists under log_dir while process runs; returns it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended early: {(process.communicate()[1] or '')[-2000:]}")
        found = list(Path(log_dir).glob(pattern))
        if found:
            return found[0]
        time.sleep(0.002)
    process.kill()
    pytest.fail(f"no {pattern} within {timeout} s")


class RunsCode:
    """Pickles to a call of os.system that creates `marker`: a checkpoint holding one must be refused."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def error_line(capsys):
    """The one non-empty line a CLI printed on stderr (fails if there are more, e.g. a traceback)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]
