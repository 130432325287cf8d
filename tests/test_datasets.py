"""MNIST and FashionMNIST at any bit depth (--dataset, --bits): the quantization against its formula on all 256
pixel values for every B, B = 1 as exactly a Bernoulli, 2-epoch runs of the 2019 (binary MNIST) and 2022 (4-bit
MNIST) settings end to end, an exact resume of a non-default run, and checkpoints of one dataset or bit depth
refused in one line by a resume or an evaluation that asks for another."""
import json
import math
import shutil
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

import evaluate
import train_torch
from cli_contract import Case, context, run_case
from conftest import SMALL, generated_data, history_without_time, only_run_dir
from dgmkit.data.datasets import DATASETS, load_data, quantize
from dgmkit.runs.checkpoints import load_checkpoint
from dgmkit.vae.model import VAE
from utils import log_px_given_z

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("bits", range(1, 9))
def test_quantize_every_bit_depth_on_all_256_values(bits):
    """level = floor(p / 255 * L), L = 2^B, with 255 -> L - 1, in exact rational arithmetic."""
    levels = 2 ** bits
    expected = [min(math.floor(Fraction(p, 255) * levels), levels - 1) for p in range(256)]
    assert quantize(torch.arange(256, dtype=torch.uint8), bits).tolist() == expected
    assert expected[0] == 0 and expected[255] == levels - 1 and len(set(expected)) == levels


def test_one_bit_is_exactly_a_bernoulli():
    """Two logits (a, b) per pixel: the categorical log-likelihood is the Bernoulli one with logit b - a."""
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 28, 28, dtype=torch.float64)
    imgs = torch.randint(0, 2, (3, 1, 28, 28))
    bernoulli = -F.binary_cross_entropy_with_logits(logits[:, 1] - logits[:, 0], imgs[:, 0].double(),
                                                    reduction="none").flatten(1).sum(1)
    assert torch.allclose(log_px_given_z(logits, imgs), bernoulli, rtol=1e-12)


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    return generated_data(tmp_path_factory.mktemp("mnist"), 120, 30, seed=3, folder="MNIST")


def test_mnist_loads_from_its_own_folder(mnist_data):
    train, val, test = load_data(mnist_data, "mnist", 1, batch_size=64, download=False)
    assert (len(train.dataset), len(val.dataset), len(test.dataset)) == (108, 12, 30)
    assert set(torch.unique(test.dataset.images).tolist()) <= {0, 1}
    with pytest.raises(Exception, match="FashionMNIST not found"):
        load_data(mnist_data, "fashion_mnist", 4, download=False)


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


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_the_encoder_scales_every_bit_depth_to_minus_one_one(bits):
    """Levels 0..L-1 enter the convs as -1..+1 (level / (L - 1) * 2 - 1), for any L, and the decoder emits L
    logits per pixel."""
    levels = 2 ** bits
    torch.manual_seed(0)
    model = VAE(4, 2, 1e-3, levels=levels)
    imgs = torch.randint(0, levels, (3, 1, 28, 28))
    by_hand = model.encoder.net[:-1](imgs.float() * (2.0 / (levels - 1)) - 1)
    assert torch.allclose(model.encoder.features(imgs), by_hand, atol=1e-6)
    assert model.decoder(torch.zeros(1, 2)).shape == (1, levels, 28, 28)
