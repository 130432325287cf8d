"""train_torch.py, the assignment's script: its names (the assignment's API) are the kit's, sample_and_save draws on a
fork of the random stream, and the speed options keep the contract: the same outputs, finite losses, bpd close to
fp32's on the same seed. A whole run through the CLI: tests/end_to_end/test_cli.py; its bad inputs:
tests/end_to_end/test_bad_inputs*.py."""
import json
import math

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

import train_torch
from conftest import SMALL
from dgmkit.vae import model as vae_model
from dgmkit.vae import training
from train_torch import VAE, main, parse_args, sample_and_save


def test_the_assignments_names_are_the_kits():
    """train_torch.VAE, train_vae, test_vae (the assignment's API) are the kit's own objects, and __all__ names only
    what the module has."""
    assert train_torch.VAE is vae_model.VAE
    assert train_torch.train_vae is training.train_vae and train_torch.test_vae is training.test_vae
    assert all(callable(getattr(train_torch, name)) for name in train_torch.__all__)
    assert {"VAE", "train_vae", "test_vae", "sample_and_save", "main", "parse_args", "cli"} <= set(train_torch.__all__)


def test_sample_and_save_leaves_the_random_stream_alone(tmp_path):
    """The assignment's sample_and_save writes samples_epoch_XXX.png and logs the grid, drawing on a fork of the
    RNG: the global stream afterwards is the one it would be without the call."""
    model = VAE(num_filters=4, z_dim=2, lr=1e-3)
    torch.manual_seed(3)
    expected = torch.rand(5)
    torch.manual_seed(3)
    with SummaryWriter(str(tmp_path)) as writer:
        sample_and_save(model, 7, writer, batch_size=4)
    assert torch.equal(torch.rand(5), expected)
    assert (tmp_path / "samples_epoch_007.png").stat().st_size > 0


# ---- speed options ------------------------------------------------------------------------------------------------

def train(data_dir, log_dir, *flags):
    args = parse_args(["--data_dir", str(data_dir), "--log_dir", str(log_dir), *SMALL, "--sample_epochs", "2", *flags])
    metrics = main(args)
    run_dir = next(p for p in log_dir.iterdir() if p.is_dir())
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    files = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()
             and not p.name.startswith("events.out")}
    return metrics, history, files


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    return train(tiny_data, tmp_path_factory.mktemp("fp32"), "--precision", "fp32", "--no-channels_last",
                 "--compile", "off")


@pytest.mark.parametrize("flags, tolerance", [
    (["--channels_last", "--compile", "off"], 1e-4),   # a memory layout: the same maths up to float rounding
    pytest.param(["--precision", "bf16", "--compile", "off"], 0.05, marks=pytest.mark.slow),  # ~3 digits; slow on AVX2
    (["--eval_batch_size", "7", "--compile", "off"], 0.03),  # other batches draw other z noise for validation
    pytest.param(["--compile"], 1e-3, marks=pytest.mark.slow),  # fused kernels, fp32 (a bare --compile means on)
])
def test_option_keeps_the_contract(flags, tolerance, reference, tiny_data, tmp_path):
    ref_metrics, ref_history, ref_files = reference
    metrics, history, files = train(tiny_data, tmp_path, *flags)
    assert files == ref_files
    for ours, theirs in zip(history, ref_history, strict=True):
        for key in ("train_bpd", "val_bpd", "train_kl_nats", "val_kl_nats"):
            assert math.isfinite(ours[key])
        assert abs(ours["train_bpd"] - theirs["train_bpd"]) < tolerance
        assert abs(ours["val_bpd"] - theirs["val_bpd"]) < tolerance
    assert abs(metrics["test_bpd"] - ref_metrics["test_bpd"]) < tolerance
