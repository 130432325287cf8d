"""What a person sees in TensorBoard, read back from a run's event file with TensorBoard's own reader: one run
(no <run>/hparams), train and validation bpd grouped first and on one custom-scalars chart, the ELBO terms next,
the values those of history.jsonl and metrics.json, and the HParams entry inside the run."""
import json
import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

import train_torch
from conftest import SMALL, generated_data, only_run_dir
from dgmkit.vae.family import HPARAM_METRICS, HPARAMS

EPOCH_TAGS = {"bpd/train", "bpd/val", "objective/bpd_train", "elbo_terms/rec_nats_train", "elbo_terms/rec_nats_val",
              "elbo_terms/kl_nats_train", "elbo_terms/kl_nats_val"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch run of 4-bit MNIST with the final IW bound (K = 2), so that every final/ figure exists."""
    root = tmp_path_factory.mktemp("tb")
    data = generated_data(root / "data", 80, 20, seed=3, folder="MNIST")
    train_torch.main(train_torch.parse_args(["--dataset", "mnist", "--data_dir", str(data), "--log_dir",
                                             str(root / "logs"), *SMALL, "--final_iw_samples", "2"]))
    run_dir = only_run_dir(root / "logs")
    return run_dir, EventAccumulator(str(run_dir)).Reload()


def test_one_run_in_the_list(run):
    run_dir, _ = run
    event_files = [p for p in run_dir.rglob("events.out.tfevents.*")]
    assert [p.parent for p in event_files] == [run_dir]  # no hparams/ subfolder, no second run
    assert not (run_dir / "hparams").exists()


def test_bpd_is_the_first_group_and_the_elbo_terms_the_next(run):
    """Time Series (TensorBoard's first tab) shows tag groups, the part before '/', in alphabetical order."""
    _, events = run
    tags = set(events.Tags()["scalars"]) | set(events.Tags()["images"])
    groups = sorted({tag.split("/")[0] for tag in tags})
    assert groups[:2] == ["bpd", "elbo_terms"]
    assert EPOCH_TAGS <= set(events.Tags()["scalars"])
    assert sorted(t for t in events.Tags()["scalars"] if t.startswith("bpd/")) == ["bpd/train", "bpd/val"]


def test_the_scalars_are_the_history_and_the_metrics(run):
    run_dir, events = run
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    for tag, key in [("bpd/train", "train_bpd"), ("bpd/val", "val_bpd"), ("objective/bpd_train", "train_objective_bpd"),
                     ("elbo_terms/rec_nats_val", "val_rec_nats"), ("elbo_terms/kl_nats_train", "train_kl_nats")]:
        points = events.Scalars(tag)
        assert [p.step for p in points] == [1, 2]
        assert [p.value for p in points] == pytest.approx([h[key] for h in history], rel=1e-6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("test_bpd", "test_iw_bpd", "best_val_bpd", "test_active_units", "seconds_per_epoch"):
        (point,) = events.Scalars(f"final/{name}")
        assert point.value == pytest.approx(metrics[name], rel=1e-6) and point.step == metrics["best_epoch"]


def test_the_custom_scalars_layout_puts_train_and_val_bpd_on_one_chart(run):
    _, events = run
    (tag,) = events.PluginTagToContent("custom_scalars")  # the layout: a string tensor under this tag
    (event,) = events.Tensors(tag)
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    first = layout.category[0].chart[0]
    scalar_tags = events.Tags()["scalars"]
    matched = {tag for pattern in first.multiline.tag for tag in scalar_tags if re.search(pattern, tag)}
    assert matched == {"bpd/train", "bpd/val"}
    # Every chart of the layout shows tags the run has (a typo would leave an empty chart).
    for category in layout.category:
        for chart in category.chart:
            for pattern in chart.multiline.tag:
                assert any(re.search(pattern, tag) for tag in scalar_tags), pattern


def test_the_hparams_entry_is_in_the_run(run):
    run_dir, events = run
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    settings = json.loads((run_dir / "args.json").read_text())
    for name in HPARAMS:
        value = start.hparams[name]
        shown = value.string_value or value.number_value or value.bool_value
        assert shown == settings[name], name
    assert start.hparams["dataset"].string_value == "mnist" and start.hparams["bits"].number_value == 4
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert metric_tags == {f"final/{name}" for name in HPARAM_METRICS}
    assert metric_tags <= set(events.Tags()["scalars"])  # HParams reads each metric from these scalars
