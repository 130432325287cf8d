"""MNIST at 1 and 4 bits through train_torch.py: 2-epoch runs of the 2019 (binary) and 2022 (4-bit) settings end to
end, an exact resume of a non-default run, and checkpoints of one dataset or bit depth refused in one line by a resume
or an evaluation that asks for another (the loaders and the quantization: tests/data/test_datasets.py)."""
import json
import shutil

import pytest

import evaluate
import train_torch
from cli_contract import Case, context, run_case
from conftest import SMALL, generated_data, history_without_time, only_run_dir
from dgmkit.data.datasets import DATASETS
from dgmkit.runs.checkpoints import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    return generated_data(tmp_path_factory.mktemp("mnist"), 120, 30, seed=3, folder="MNIST")


@pytest.fixture(scope="module")
def mnist_runs(mnist_data, tmp_path_factory):
    logs, runs = tmp_path_factory.mktemp("mnist_runs"), {}
    for bits in (1, 4):
        train_torch.main(train_torch.parse_args(["--dataset", "mnist", "--bits", str(bits), "--data_dir",
                                                 str(mnist_data), "--log_dir", str(logs / str(bits)), *SMALL,
                                                 "--final_iw_samples", "3", "--sample_epochs", "0"]))
        runs[bits] = only_run_dir(logs / str(bits))
    return runs


@pytest.mark.parametrize("bits", [1, 4])
def test_mnist_runs_end_to_end(mnist_runs, bits):
    """The 2019 (binary) and 2022 (4-bit) MNIST VAEs: L logits per pixel, every output written, digit classes."""
    run = mnist_runs[bits]
    args = json.loads((run / "args.json").read_text())
    assert (args["dataset"], args["bits"]) == ("mnist", bits)
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    assert state["model"]["decoder.net.8.weight"].shape[1] == 2 ** bits  # the last transposed conv: L channels
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and all(0 < h["val_bpd"] < bits + 1 for h in history)
    record = json.loads((run / "eval_test.json").read_text())
    assert list(record["per_class"]) == list(DATASETS["mnist"].classes) == [str(d) for d in range(10)]
    assert sum(c["count"] for c in record["per_class"].values()) == 30
    assert (run / "samples_epoch_000.png").is_file() and (run / "samples_epoch_002.png").is_file()


def test_binary_mnist_resume_is_exact(mnist_data, tmp_path):
    flags = ["--dataset", "mnist", "--bits", "1", "--data_dir", str(mnist_data), *SMALL]
    train_torch.main(train_torch.parse_args([*flags, "--epochs", "3", "--log_dir", str(tmp_path / "straight")]))
    train_torch.main(train_torch.parse_args([*flags, "--epochs", "2", "--log_dir", str(tmp_path / "cut")]))
    cut = only_run_dir(tmp_path / "cut")
    train_torch.main(train_torch.parse_args(["--resume", str(cut), "--epochs", "3"]))
    straight = only_run_dir(tmp_path / "straight")
    assert history_without_time(cut) == history_without_time(straight)
    assert json.loads((cut / "metrics.json").read_text())["test_bpd"] == \
        json.loads((straight / "metrics.json").read_text())["test_bpd"]


REFUSALS = [
    Case("resume-with-other-bits", lambda c: ["--resume", c.run, "--bits", "4", "--epochs", "3"], 2,
         ("bits=1", "bits=4")),
    Case("resume-with-other-dataset", lambda c: ["--resume", c.run, "--dataset", "fashion_mnist", "--epochs", "3"],
         2, ("--dataset fashion_mnist differs from the resumed run's mnist",)),
]


@pytest.fixture
def binary_run(mnist_runs, tmp_path, monkeypatch):
    """A copy of the binary-MNIST run at tmp/run, in a cli_contract context."""
    shutil.copytree(mnist_runs[1], tmp_path / "run")
    return context(tmp_path, monkeypatch, run=tmp_path / "run")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in REFUSALS])
def test_a_resume_refuses_another_dataset_or_bit_depth(case, binary_run, capsys):
    run_case(case, train_torch.cli, "train_torch.py", binary_run, capsys)


@pytest.mark.parametrize("flags, says", [(["--dataset", "fashion_mnist"], "holds a model of --dataset mnist"),
                                         (["--bits", "4"], "holds a model of --bits 1")])
def test_an_evaluation_refuses_another_dataset_or_bit_depth(flags, says, binary_run, capsys):
    case = Case("evaluate-" + flags[0], lambda c: [c.run, *flags, "--iw_samples", "2", "--device", "cpu"], 2, (says,))
    run_case(case, evaluate.cli, "evaluate.py", binary_run, capsys)
