"""Every objective and posterior family through train_torch.py: --objective iwae --train_samples 1 trains exactly like
the default, each family writes every output on the same scale, and a killed IWAE + planar run resumes to the
uninterrupted one (the bounds themselves: tests/vae/test_bounds*.py)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import train_torch
from conftest import PART1, REPO_ROOT, SMALL, history_without_time, only_run_dir, run_script, wait_for
from dgmkit.engine import hardware
from dgmkit.runs.checkpoints import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


FAMILIES = {"elbo-k2": ["--train_samples", "2"], "iwae-k3": ["--objective", "iwae", "--train_samples", "3"],
            "planar": ["--flow", "planar", "--flow_length", "2"], "radial": ["--flow", "radial", "--flow_length", "2"],
            "iwae-planar": ["--objective", "iwae", "--train_samples", "3", "--flow", "planar", "--flow_length", "2"]}
# conftest's SMALL run, narrower, with a sample grid before training and the final IW evaluation (K = 4)
FAMILY_SMALL = [*SMALL, "--num_filters", "4", "--sample_epochs", "0", "--final_iw_samples", "4"]


@pytest.fixture(scope="module")
def family_runs(tiny_data, tmp_path_factory):
    logs = tmp_path_factory.mktemp("families")
    runs = {}
    for name, flags in FAMILIES.items():
        train_torch.main(train_torch.parse_args(["--data_dir", str(tiny_data), "--log_dir", str(logs / name),
                                                 *FAMILY_SMALL, *flags]))
        runs[name] = only_run_dir(logs / name)
    return runs


def test_iwae_k1_trains_exactly_like_the_default(tiny_data, tmp_path):
    """End to end: --objective iwae --train_samples 1 gives the default ELBO run's history and test figures."""
    records = []
    for name, flags in (("default", []), ("iwae-k1", ["--objective", "iwae", "--train_samples", "1"])):
        train_torch.main(train_torch.parse_args(["--data_dir", str(tiny_data), "--log_dir", str(tmp_path / name),
                                                 *FAMILY_SMALL, "--final_iw_samples", "0", *flags]))
        run_dir = only_run_dir(tmp_path / name)
        history = history_without_time(run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        records.append((history, metrics["test_bpd"], metrics["test_kl_nats"]))
    assert len(records[0][0]) == 2 and records[0] == records[1]


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_writes_every_output(family_runs, name):
    run_dir = family_runs[name]
    files = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert {"args.json", "history.jsonl", "metrics.json", "eval_test.json", "vae_manifold.png",
            "samples_epoch_000.png", "samples_epoch_002.png", "checkpoints/best.pt", "checkpoints/last.pt"} <= files
    args = json.loads((run_dir / "args.json").read_text())
    flags = dict(zip(FAMILIES[name][::2], FAMILIES[name][1::2]))
    assert args["objective"] == flags.get("--objective", "elbo")
    assert args["train_samples"] == int(flags.get("--train_samples", 1))
    assert (args["flow"], args["flow_length"]) == (flags.get("--flow", "none"), int(flags.get("--flow_length", 0)))
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["args"]["flow"] == args["flow"]
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    for h in history:  # the training objective and the ELBO terms, on the same scale
        assert h["train_bpd"] == pytest.approx((h["train_rec_nats"] + h["train_kl_nats"]) / 784 / math.log(2))
        if args["objective"] == "iwae":
            assert h["train_objective_bpd"] < h["train_bpd"] + 0.05  # the tighter bound, up to noise
        assert 0 < h["train_objective_bpd"] < 8
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = json.loads((run_dir / "eval_test.json").read_text())
    assert metrics["test_iw_bpd"] == record["iw_bpd"] and len(record["per_image_iw_bpd"]) == 60
    # The machine that ran it, as this process sees it (one_thread: the fixture's single torch thread).
    assert metrics["machine"] == {"device_name": hardware.machine(torch.device("cpu"))["device_name"],
                                  "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                  else os.cpu_count(), "threads": 1, "torch": torch.__version__,
                                  "cuda": torch.version.cuda}


@pytest.mark.slow
def test_kill_then_resume_of_iwae_planar_equals_uninterrupted(tiny_data, tmp_path):
    flags = ["--data_dir", str(tiny_data), *FAMILY_SMALL, "--epochs", "3", "--batch_size", "16",
             *FAMILIES["iwae-planar"]]
    # Both runs in fresh processes with the same environment (thread count included): bitwise comparable.
    assert run_script(["part1/train_torch.py", *flags, "--log_dir", tmp_path / "ref"]).returncode == 0
    reference = json.loads((only_run_dir(tmp_path / "ref") / "metrics.json").read_text())
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    process = subprocess.Popen([sys.executable, str(PART1 / "train_torch.py"), *flags, "--log_dir",
                                str(tmp_path / "cut")], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_for(process, tmp_path / "cut", "*/checkpoints/last.pt")
    process.kill()
    process.wait()
    run_dir = only_run_dir(tmp_path / "cut")
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] < 3  # really cut short
    result = run_script(["part1/train_torch.py", "--resume", run_dir, "--no-progress_bar"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert history_without_time(run_dir) == history_without_time(only_run_dir(tmp_path / "ref"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_bpd"] == reference["test_bpd"] and metrics["test_iw_bpd"] == reference["test_iw_bpd"]
