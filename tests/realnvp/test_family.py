"""dgmkit/realnvp/family.py: validation is the image-weighted average of the flow's terms in eval mode, the last line
says the bound, --grad_clip reaches the steps, and a run writes the run folder and TensorBoard of the VAE."""
import json

import pytest
import torch
import torch.nn as nn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_realnvp
from conftest import REALNVP_SMALL, history_without_time, train_2019
from dgmkit.realnvp import family


class Terms(nn.Module):
    """A stand-in flow: its terms are functions of the batch written by hand (the mean level), and it records the
    mode it ran in."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.modes = []

    @property
    def device(self):
        return self.anchor.device

    def forward(self, imgs):
        self.modes.append(self.training)
        level = imgs.double().mean()
        return {"bpd": level, "nll_nats": 10 * level, "logdet_nats": -level, "unused": torch.tensor(99.0)}


def test_validate_is_the_image_weighted_average_in_eval_mode():
    model = Terms().train()
    batches = [(torch.full((3, 1, 28, 28), 2), None), (torch.full((1, 1, 28, 28), 6), None)]
    stats = family.validate(model, batches)
    assert list(stats) == ["bpd", "nll_nats", "logdet_nats"]  # history's order; nothing else
    assert stats["bpd"] == pytest.approx((3 * 2 + 1 * 6) / 4) and stats["nll_nats"] == pytest.approx(30.0)
    assert stats["logdet_nats"] == pytest.approx(-3.0)
    assert model.modes == [False, False] and model.training  # eval mode, restored


def test_the_last_line_says_the_bound():
    assert family.summary({"test_bpd": 1.234567, "test_bpd_se": 0.01234, "draws": 10, "best_epoch": 7}) == (
        "test bpd 1.2346 +- 0.0123 (dequantization bound, 10 draws per image; best epoch 7)")


def test_realnvp_clips_its_gradients_when_asked(mnist_8bit, tmp_path):
    """--grad_clip reaches RealNVP's steps: clipped to a norm of 1e-9, Adam's steps shrink below its epsilon and
    the first epoch's training statistics differ from the unclipped run's (same seed, same data order)."""
    train_2019(train_realnvp, REALNVP_SMALL, mnist_8bit, tmp_path / "free", 1)
    train_2019(train_realnvp, [*REALNVP_SMALL, "--grad_clip", "1e-9"], mnist_8bit, tmp_path / "clipped", 1)
    free, clipped = (history_without_time(tmp_path / name / "r")[0] for name in ("free", "clipped"))
    assert free["train_bpd"] != clipped["train_bpd"] and free["val_bpd"] != clipped["val_bpd"]


def test_realnvp_run_folder_and_tensorboard(mnist_8bit, tmp_path):
    metrics = train_2019(train_realnvp, REALNVP_SMALL, mnist_8bit, tmp_path, 2)
    run = tmp_path / "r"
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert {"train_bpd", "val_bpd", "train_nll_nats", "val_logdet_nats"} <= history[-1].keys()
    # bpd is nll_nats in bits per dimension, and a valid bound on 8-bit data is above 0 and below 8 + slack.
    assert history[-1]["val_bpd"] == pytest.approx(history[-1]["val_nll_nats"] / (784 * 0.6931471805599453))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test_bpd"] == metrics["test_bpd"] and saved["draws"] == 2 and saved["test_bpd_se"] > 0
    assert 0 < saved["test_bpd"] < 9 and saved["best_epoch"] in (1, 2)
    per_image = json.loads((run / "eval_test.json").read_text())["per_image_bpd"]
    assert len(per_image) == 20 and sum(per_image) / 20 == pytest.approx(saved["test_bpd"], rel=1e-9)
    events = EventAccumulator(str(run)).Reload()
    assert sorted({tag.split("/")[0] for tag in events.Tags()["scalars"]})[0] == "bpd"
    assert {"bpd/train", "bpd/val", "flow_terms/logdet_nats_val", "final/test_bpd"} <= set(events.Tags()["scalars"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert not (run / "hparams").exists()
