"""train_torch.py end to end: outputs of a run, TensorBoard tags, reruns, real data (bad arguments:
test_bad_inputs.py)."""
import json
import math
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import PART1, REPO_ROOT, history_without_time, only_run_dir, run_script
from dgmkit.runs import paths
from dgmkit.vae.family import VAE_BOARD


def read_history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


pytestmark = pytest.mark.slow  # every test here runs train_torch.py in fresh interpreters


@pytest.fixture(scope="module")
def two_runs(tiny_data, tmp_path_factory):
    """The same 2-epoch z_dim=2 run twice: from the repo root, and from part1/."""
    logs = tmp_path_factory.mktemp("logs")
    common = ["--data_dir", tiny_data, "--epochs", "2", "--batch_size", "64", "--z_dim", "2", "--num_filters", "8",
              "--sample_epochs", "0", "1", "2", "--num_workers", "0", "--device", "cpu", "--final_iw_samples", "3"]
    first = run_script(["part1/train_torch.py", *common, "--log_dir", logs / "root"], cwd=REPO_ROOT)
    second = run_script(["train_torch.py", *common, "--log_dir", logs / "part1"], cwd=PART1)
    for result in (first, second):
        assert result.returncode == 0, result.stderr[-3000:]
    return first, only_run_dir(logs / "root"), only_run_dir(logs / "part1")


def test_run_writes_every_output(two_runs, tiny_data):
    result, run_dir, _ = two_runs
    names = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    expected = {"args.json", "history.jsonl", "metrics.json", "vae_manifold.png", "samples_epoch_000.png",
                "samples_epoch_001.png", "samples_epoch_002.png", "checkpoints/best.pt", "checkpoints/last.pt"}
    assert expected <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert len([n for n in names if n.startswith("events.out.tfevents")]) == 1

    args = json.loads((run_dir / "args.json").read_text())
    assert args["z_dim"] == 2 and args["epochs"] == 2 and args["log_dir"] == ".."
    assert paths.resolve(args["data_dir"], run_dir) == tiny_data.resolve()  # recorded relative to the run folder

    history = read_history(run_dir)
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        for split in ("train", "val"):
            assert h[f"{split}_bpd"] == pytest.approx((h[f"{split}_rec_nats"] + h[f"{split}_kl_nats"]) / 784 / math.log(2))
        assert h["train_objective_bpd"] == pytest.approx(h["train_bpd"], rel=1e-6)  # elbo, K = 1: the same loss
    # Random-init logits are not uniform, so the first epoch starts a bit above 4 bpd and must fall.
    assert 0 < history[1]["train_bpd"] < history[0]["train_bpd"] < 6

    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = min(history, key=lambda h: h["val_bpd"])
    assert metrics["best_epoch"] == best["epoch"] and metrics["best_val_bpd"] == pytest.approx(best["val_bpd"])
    assert metrics["device"] == "cpu" and metrics["wall_time_s"] > 0 and 0 < metrics["test_bpd"] < 6
    # The importance-weighted bound (K=3) is at least as tight as the ELBO, up to Monte Carlo noise.
    assert metrics["iw_samples"] == 3 and metrics["test_iw_bpd"] < metrics["test_bpd"] + 4 * metrics["test_iw_bpd_se"]
    assert metrics["test_bpd"] == pytest.approx((metrics["test_rec_nats"] + metrics["test_kl_nats"]) / 784 / math.log(2))

    best_ckpt = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    last_ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "epoch", "best_val_bpd", "best_epoch", "args"} <= set(last_ckpt)
    assert last_ckpt["epoch"] == 2 and best_ckpt["epoch"] == metrics["best_epoch"]
    assert last_ckpt["args"]["z_dim"] == 2

    # One printed line per epoch, and the final summary.
    assert "epoch   1/2 | train bpd" in result.stdout and "epoch   2/2 | train bpd" in result.stdout
    assert f"test bpd {metrics['test_bpd']:.4f}" in result.stdout


def test_tensorboard_tags(two_runs):
    _, run_dir, _ = two_runs
    events = EventAccumulator(str(run_dir)).Reload()
    scalars = set(events.Tags()["scalars"])
    for split in ("train", "val"):
        for name in ("bpd", "rec_nats", "kl_nats") + (("objective_bpd",) if split == "train" else ()):
            assert VAE_BOARD.epoch_tag(split, name) in scalars
            assert [e.step for e in events.Scalars(VAE_BOARD.epoch_tag(split, name))] == [1, 2]
    assert len(events.Scalars("final/test_bpd")) == 1 and "final/test_iw_bpd" in scalars
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert events.Scalars("final/test_bpd")[0].value == pytest.approx(metrics["test_bpd"], rel=1e-6)
    assert set(events.Tags()["images"]) == {"samples", "manifold"}
    assert [e.step for e in events.Images("samples")] == [0, 1, 2]


def test_rerun_from_part1_gives_identical_numbers(two_runs):
    _, root_run, part1_run = two_runs
    assert read_history(root_run)[-1]["val_bpd"] == read_history(part1_run)[-1]["val_bpd"]
    assert history_without_time(root_run) == history_without_time(part1_run)
    first = json.loads((root_run / "metrics.json").read_text())
    second = json.loads((part1_run / "metrics.json").read_text())
    assert first["test_bpd"] == second["test_bpd"]


@pytest.mark.skipif(not os.environ.get("VAE_REAL_DATA_DIR"), reason="set VAE_REAL_DATA_DIR to a FashionMNIST root")
def test_real_data_validation_bpd_falls_below_3(tmp_path):
    """A short run on real FashionMNIST: validation bpd < 3.0 within 3 epochs (the assignment: < 2.0 after 2 on 54k)."""
    result = run_script(["part1/train_torch.py", "--data_dir", os.environ["VAE_REAL_DATA_DIR"], "--epochs", "3",
                         "--batch_size", "64", "--sample_epochs", "--final_iw_samples", "0", "--log_dir", tmp_path,
                         "--device", "cpu"])
    assert result.returncode == 0, result.stderr[-3000:]
    history = read_history(only_run_dir(tmp_path))
    assert min(h["val_bpd"] for h in history) < 3.0
