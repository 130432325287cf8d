"""evaluate.py: the JSON, pictures and TensorBoard entries of an evaluation, a checkpoint path and the validation split,
and a flow posterior rebuilt from its checkpoint (bad inputs: tests/end_to_end/test_bad_inputs_runs.py; memory,
signals, a text epoch and the record training writes too: test_hardening3_evaluate.py there; the bounds it computes:
tests/vae/test_bounds*.py, its statistics: tests/vae/test_estimates.py)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_torch
from conftest import SMALL, only_run_dir, run_script
from dgmkit.runs import paths
from dgmkit.vae.model import VAE
from evaluate import load_model, main, parse_args
from fmnist import fmnist

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flow_run(micro_data, tmp_path_factory):
    """A finished SMALL run of the IWAE objective (K = 3) with a planar flow of length 2."""
    logs = tmp_path_factory.mktemp("flow_run")
    train_torch.main(train_torch.parse_args(["--data_dir", str(micro_data), "--log_dir", str(logs), *SMALL,
                                             "--objective", "iwae", "--train_samples", "3", "--flow", "planar",
                                             "--flow_length", "2"]))
    return only_run_dir(logs)


def test_evaluate_rebuilds_the_flow_from_the_checkpoint(flow_run):
    model, ckpt = load_model(flow_run / "checkpoints" / "best.pt", torch.device("cpu"))
    assert (model.flow, model.flow_length) == ("planar", 2) and hasattr(model, "flow_head")


@pytest.fixture(scope="module")
def trained_run(finished_run, tmp_path_factory):
    """A copy of the shared finished run (micro_data: 20 test images), which evaluate.py may write into."""
    return Path(shutil.copytree(finished_run, tmp_path_factory.mktemp("eval") / "run"))


@pytest.mark.slow
def test_cli_writes_json_and_pictures(trained_run):
    result = run_script(["part1/evaluate.py", trained_run, "--iw_samples", "5", "--device", "cpu"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((trained_run / "eval_test.json").read_text())
    assert {"written_by", "checkpoint", "epoch", "dataset", "bits", "split", "num_images", "iw_samples", "bpd",
            "bpd_se", "iw_bpd", "iw_bpd_se", "gap_bpd", "gap_bpd_se", "rec_nats", "kl_nats", "nelbo_nats", "iw_nats",
            "active_units", "per_class", "latents", "per_image_iw_bpd", "pictures", "seed", "batch_size",
            "chunk_size", "device", "wall_time_s"} <= set(report)
    assert (report["written_by"], report["dataset"], report["bits"], report["batch_size"], report["chunk_size"]) == (
        "evaluate.py", "fashion_mnist", 4, 128, 2048)
    assert "replaced" not in report and "replacing" not in result.stdout  # the run had no eval_test.json
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert report["checkpoint"].endswith("best.pt") and report["epoch"] == metrics["best_epoch"]
    assert report["split"] == "test" and (report["num_images"], report["iw_samples"]) == (20, 5)
    assert 0 < report["iw_bpd"] < 6 and 0 < report["bpd"] < 6 and report["iw_bpd_se"] > 0
    assert report["gap_bpd"] > -4 * report["gap_bpd_se"]  # IW(5) >= ELBO up to Monte Carlo error
    assert report["nelbo_nats"] == pytest.approx(report["rec_nats"] + report["kl_nats"])
    assert sum(report["per_image_iw_bpd"]) / 20 == pytest.approx(report["iw_bpd"], rel=1e-9)
    assert abs(report["bpd"] - metrics["test_bpd"]) < 4 * report["bpd_se"]  # same model, another draw of z
    assert sum(c["count"] for c in report["per_class"].values()) == 20
    # Active units, recomputed from the checkpoint's encoder: variance over the test images of each mean.
    model = VAE(num_filters=8, z_dim=2, lr=1e-3)
    model.load_state_dict(torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)["model"])
    data_dir = paths.resolve(json.loads((trained_run / "args.json").read_text())["data_dir"], trained_run)
    test_imgs = torch.cat([x for x, _ in fmnist(data_dir, 64, download=False)[2]])
    with torch.inference_mode():
        means = model.eval().encoder(test_imgs)[0]  # [20, 2]
    assert len(report["latents"]["kl_per_dim"]) == 2
    assert report["active_units"] == int((means.double().var(dim=0) > 0.01).sum())
    assert f"IW K=5 {report['iw_bpd']:.4f}" in result.stdout

    pad, size = 2, 28  # make_grid's layout
    assert report["pictures"] == {"reconstructions": "reconstructions_test.png",
                                  "interpolations": "interpolations_test.png"}
    with Image.open(trained_run / "reconstructions_test.png") as img:  # 2 rows of 8
        assert img.size == (pad + 8 * (size + pad), pad + 2 * (size + pad))
    with Image.open(trained_run / "interpolations_test.png") as img:  # 8 rows: x_a, 10 steps, x_b
        assert img.size == (pad + 12 * (size + pad), pad + 8 * (size + pad))
    events = EventAccumulator(str(trained_run)).Reload()
    assert {"eval_test/reconstructions", "eval_test/interpolations"} <= set(events.Tags()["images"])
    assert events.Scalars("eval_test/iw_bpd")[0].value == pytest.approx(report["iw_bpd"], rel=1e-6)


def test_checkpoint_path_and_val_split(trained_run, tiny_data):
    report = main(parse_args([str(trained_run / "checkpoints" / "last.pt"), "--split", "val", "--iw_samples", "2",
                              "--data_dir", str(tiny_data), "--device", "cpu", "--batch_size", "7"]))
    assert report["num_images"] == 30 and report["checkpoint"].endswith("last.pt")
    assert json.loads((trained_run / "eval_val.json").read_text())["iw_bpd"] == report["iw_bpd"]
    assert (trained_run / "reconstructions_val.png").is_file()
