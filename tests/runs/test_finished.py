"""dgmkit/runs/finished.py: a run folder written by hand read back whole (load_run: history, settings, metrics, the
evaluation, the sample grids by epoch, the manifold), and the one-line refusals of a folder that is missing, has no
history, is unfinished, or whose files lack or mistype what a results table reads."""
import json

import pytest

from dgmkit.errors import UserError
from dgmkit.runs.finished import load_finished_run, load_run

HISTORY = [{"epoch": 1, "seconds": 1.5, "train_bpd": 3.9, "val_bpd": 3.4},
           {"epoch": 2, "seconds": 1.25, "train_bpd": 2.5, "val_bpd": 2.3}]
METRICS = {"test_bpd": 2.31, "test_rec_nats": 1200.5, "test_kl_nats": 12.25, "best_epoch": 2, "epochs": 2,
           "seconds_per_epoch": 1.375, "wall_time_s": 4.0, "device": "cpu"}
LATENTS = {"z_dim": 2, "active_threshold": 0.01, "kl_per_dim": [6.0, 6.25]}
EVAL = {"checkpoint": "checkpoints/best.pt", "num_images": 20, "iw_samples": 5, "bpd": 2.3, "nelbo_nats": 1250.0,
        "iw_bpd": 2.2, "iw_nats": 1200.0, "gap_bpd": 0.1, "per_class": {"Bag": {"count": 3, "bpd": 2.0}},
        "latents": LATENTS, "device": "cpu", "data_dir": "../data", "seed": 42, "wall_time_s": 1.0, "active_units": 2}


def write_run(folder, history=HISTORY, metrics=METRICS, evaluation=EVAL):
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({"z_dim": 2, "epochs": 2}))
    (folder / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if evaluation is not None:
        (folder / "eval_test.json").write_text(json.dumps(evaluation))
    for epoch in (10, 0, 2):
        (folder / f"samples_epoch_{epoch:03d}.png").write_bytes(b"png")
    (folder / "samples_epoch_x.png").write_bytes(b"not a grid of an epoch")
    (folder / "vae_manifold.png").write_bytes(b"png")
    return folder


def test_load_run_reads_everything_a_report_needs(tmp_path):
    run = load_run(write_run(tmp_path / "a run"))
    assert run["dir"] == tmp_path / "a run" and run["name"] == "a run"
    assert run["history"] == HISTORY and run["args"] == {"z_dim": 2, "epochs": 2}
    assert run["metrics"] == METRICS and run["eval"] == EVAL
    assert run["samples"] == {e: tmp_path / "a run" / f"samples_epoch_{e:03d}.png" for e in (0, 2, 10)}
    assert list(run["samples"]) == [0, 2, 10] and run["manifold"] == tmp_path / "a run" / "vae_manifold.png"
    unfinished = load_run(write_run(tmp_path / "b", metrics=None, evaluation=None))
    assert unfinished["metrics"] == {} and unfinished["eval"] is None
    assert load_finished_run(tmp_path / "a run")["metrics"] == METRICS


@pytest.mark.parametrize("make, says", [
    (lambda p: None, "run folder {p} does not exist"),
    (lambda p: write_run(p, history=[]), "{p}/history.jsonl is missing or empty"),
    (lambda p: write_run(p, metrics={**METRICS, "test_bpd": "2.31"}),
     "{p}/metrics.json: 'test_bpd' is '2.31', not a number"),
    (lambda p: write_run(p, evaluation={**EVAL, "num_images": 20.0}),
     "{p}/eval_test.json: 'num_images' is '20.0', not an integer"),
])
def test_load_run_refuses_in_one_line(tmp_path, make, says):
    folder = tmp_path / "run"
    make(folder)
    with pytest.raises(UserError) as info:
        load_run(folder)
    assert str(info.value).startswith(says.format(p=folder)) and "\n" not in str(info.value)


@pytest.mark.parametrize("make, says", [
    (lambda p: write_run(p, metrics=None), "{p} has no metrics.json: the run is unfinished"),
    (lambda p: write_run(p, history=[*HISTORY, {**HISTORY[1], "epoch": 3}]),  # extended after its test (#1)
     "{p}/metrics.json tests the model after epoch 2, but history.jsonl goes on to epoch 3: the run was extended"),
    (lambda p: write_run(p, metrics={k: v for k, v in METRICS.items() if k != "wall_time_s"}),
     "{p}/metrics.json lacks 'wall_time_s'"),
    (lambda p: write_run(p, evaluation={k: v for k, v in EVAL.items() if k != "iw_bpd"}),
     "{p}/eval_test.json lacks 'iw_bpd'"),
    (lambda p: write_run(p, evaluation={**EVAL, "per_class": {"Bag": {"bpd": 2.0}}}),
     "{p}/eval_test.json, per_class 'Bag' lacks 'count'"),
    (lambda p: write_run(p, evaluation={**EVAL, "latents": {"z_dim": 2}}),
     "{p}/eval_test.json, latents lacks 'active_threshold'"),
])
def test_a_finished_run_must_hold_what_a_results_table_reads(tmp_path, make, says):
    folder = tmp_path / "run"
    make(folder)
    load_run(folder)  # readable as a run ...
    with pytest.raises(UserError) as info:  # ... but not as a finished one
        load_finished_run(folder)
    assert str(info.value).startswith(says.format(p=folder)) and "\n" not in str(info.value)
