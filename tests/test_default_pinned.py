"""The default path pinned: a 2-epoch run of the default model and loss on generated data must give the
numbers the code gave when tests/fixtures/pinned_default.json was written (its `produced_by` says when and how),
so a refactor of data, model, loss or loop that changes what the default computes fails here. The tolerance
(relative 1e-4) absorbs other CPUs' kernels; a changed formula moves these numbers by far more."""
import json
from pathlib import Path

import pytest

import train_torch
from conftest import generated_data, only_run_dir

pytestmark = pytest.mark.usefixtures("one_thread")
PINNED = json.loads((Path(__file__).parent / "fixtures" / "pinned_default.json").read_text())


def test_a_default_run_reproduces_the_pinned_numbers(tmp_path):
    data = generated_data(tmp_path / "data", 300, 60, seed=0)
    metrics = train_torch.main(train_torch.parse_args(["--data_dir", str(data), "--log_dir", str(tmp_path / "logs"),
                                                       *PINNED["flags"]]))
    history = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
               for line in (only_run_dir(tmp_path / "logs") / "history.jsonl").read_text().splitlines()]
    assert [sorted(h) for h in history] == [sorted(h) for h in PINNED["history"]]
    for ours, pinned in zip(history, PINNED["history"]):
        assert ours == pytest.approx(pinned, rel=1e-4)
    assert {k: metrics[k] for k in PINNED["metrics"]} == pytest.approx(PINNED["metrics"], rel=1e-4)
