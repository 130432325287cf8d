"""dgmkit/vae/evaluation.py: the VAE rebuilt from a checkpoint (and its fields checked), evaluate.py's pictures (their
layout and what each cell holds: originals, the decoder mean at the posterior mean, interpolations whose ends are the
originals), an eval_<split>.json that keeps what it replaced, and the recognition of a failed allocation."""
import json
import math

import pytest
import torch

from dgmkit.runs.checkpoints import CheckpointError, save_checkpoint
from dgmkit.runs.folder import RunDir
from dgmkit.vae.evaluation import (REPLACED_KEYS, first_images, interpolation_grid, load_model,
                                   reconstruction_grid, write_evaluation)
from dgmkit.vae.model import VAE

PAD = 2  # torchvision.utils.make_grid's default padding


def cell(grid, row, col):
    """The 28x28 image at (row, col) of a make_grid grid (first channel)."""
    top, left = PAD + row * (28 + PAD), PAD + col * (28 + PAD)
    return grid[0, top:top + 28, left:left + 28]


class HandVAE(torch.nn.Module):
    """A stand-in with the VAE's encoder/decoder interface whose outputs are known in closed form: the posterior
    mean of an image is (m, -m) with m = 4 x its mean level, and the decoder's logits are z_0 * l for the levels
    l = 0..L-1, so the decoder mean at z is sum_l l e^(z_0 l) / sum_l e^(z_0 l) / (L - 1) at every pixel."""
    levels = 4

    def __init__(self):
        super().__init__()
        self.encoder = lambda imgs: (torch.stack([4 * imgs.float().mean((1, 2, 3)), -4 * imgs.float().mean((1, 2, 3))],
                                                 1), torch.zeros(len(imgs), 2))
        self.decoder = lambda z: z[:, :1, None, None] * torch.arange(4.0).view(1, 4, 1, 1).expand(len(z), 4, 28, 28)


def hand_mean(z0):
    """The decoder mean of HandVAE at z_0, by hand (a float in [0, 1])."""
    weights = [math.exp(z0 * level) for level in range(4)]
    return sum(level * w for level, w in enumerate(weights)) / sum(weights) / 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VAE(num_filters=4, z_dim=2, lr=1e-3, levels=4).eval()


@pytest.fixture(scope="module")
def imgs():
    return torch.randint(0, 4, (3, 1, 28, 28), generator=torch.Generator().manual_seed(1))


def test_reconstructions_are_the_originals_over_the_decoder_mean_at_the_posterior_mean(imgs):
    grid = reconstruction_grid(HandVAE(), imgs)
    assert grid.shape == (3, PAD + 2 * (28 + PAD), PAD + 3 * (28 + PAD))  # 2 rows of N = 3
    for i in range(3):
        assert torch.allclose(cell(grid, 0, i), imgs[i, 0].float() / 3)  # levels 0..3 -> [0, 1]
        z0 = 4 * imgs[i].float().mean().item()  # the posterior mean's first coordinate: z = mean, not a draw
        assert torch.allclose(cell(grid, 1, i), torch.full((28, 28), hand_mean(z0)), atol=1e-6)


def test_interpolations_run_from_one_original_to_the_other(imgs):
    steps = 4
    grid = interpolation_grid(HandVAE(), imgs[:2], imgs[1:3], steps=steps)
    assert grid.shape == (3, PAD + 2 * (28 + PAD), PAD + (steps + 2) * (28 + PAD))  # 2 pairs, ends included
    for p in range(2):
        a, b = 4 * imgs[p].float().mean().item(), 4 * imgs[p + 1].float().mean().item()
        assert torch.allclose(cell(grid, p, 0), imgs[p, 0].float() / 3)
        assert torch.allclose(cell(grid, p, steps + 1), imgs[p + 1, 0].float() / 3)
        for k in range(steps):  # z_t = (1 - t) mu_a + t mu_b, t = k / (steps - 1): from mu_a to mu_b exactly
            expected = hand_mean(a + (b - a) * k / (steps - 1))
            assert torch.allclose(cell(grid, p, 1 + k), torch.full((28, 28), expected), atol=1e-6), (p, k)


def test_first_images_stops_reading_once_it_has_enough():
    batches = [(torch.full((3, 1, 28, 28), k), torch.zeros(3)) for k in range(4)]
    read = []

    def loader():
        for batch in batches:
            read.append(batch)
            yield batch
    taken = first_images(loader(), 5)
    assert taken.shape == (5, 1, 28, 28) and taken[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 1] and len(read) == 2
    assert len(first_images(iter(batches[:1]), 5)) == 3  # a smaller split gives what it has
    read.clear()
    assert len(first_images(loader(), 6)) == 6 and len(read) == 2  # exactly enough: no batch more


def test_load_model_rebuilds_the_vae_or_names_the_mismatch(model, tmp_path):
    args = {"z_dim": 2, "num_filters": 4, "lr": 1e-3, "bits": 2, "flow": "none", "flow_length": 0}
    save_checkpoint(tmp_path / "good.pt", {"model": model.state_dict(), "args": args, "epoch": 3})
    rebuilt, ckpt = load_model(tmp_path / "good.pt", torch.device("cpu"))
    assert not rebuilt.training and ckpt["epoch"] == 3 and rebuilt.levels == 4
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))
    save_checkpoint(tmp_path / "other.pt", {"model": model.state_dict(), "args": {**args, "z_dim": 3}, "epoch": 3})
    with pytest.raises(CheckpointError, match="does not match the VAE of train_torch.py"):
        load_model(tmp_path / "other.pt", torch.device("cpu"))
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "missing.pt", torch.device("cpu"))


@pytest.mark.parametrize("epoch", ["three", "2", 2.0, True, -1, [2]])
def test_load_model_refuses_a_checkpoint_whose_epoch_is_not_a_number_of_epochs(model, tmp_path, epoch):
    """Issue 25, cause 12: evaluate.py on a checkpoint whose `epoch` is text was a ValueError traceback (int("three")
    for the TensorBoard step). Every field evaluate.py reads is checked where it loads the checkpoint: one line
    naming the file. (None, an older checkpoint without an epoch, is still read.)"""
    args = {"z_dim": 2, "num_filters": 4, "bits": 2}
    save_checkpoint(tmp_path / "bad.pt", {"model": model.state_dict(), "args": args, "epoch": epoch})
    with pytest.raises(CheckpointError, match=rf"{tmp_path}/bad.pt: its 'epoch' is .*not a whole number of epochs"):
        load_model(tmp_path / "bad.pt", torch.device("cpu"))
    save_checkpoint(tmp_path / "old.pt", {"model": model.state_dict(), "args": args})
    assert load_model(tmp_path / "old.pt", torch.device("cpu"))[1].get("epoch") is None


def headline(record):
    return {key: record[key] for key in REPLACED_KEYS if key in record}


def test_an_evaluation_is_never_replaced_silently(tmp_path):
    """Issue 25, cause 23: evaluate.py silently overwrote training's eval_test.json. write_evaluation (both writers')
    keeps the headline of every evaluation it replaced, oldest first, and returns the one it just replaced (None for
    a first one, and for the same evaluation again: a resumed test phase must end with the uninterrupted run's file);
    a damaged earlier file is replaced and said to be damaged."""
    run = RunDir(tmp_path)
    first = {"written_by": "train_torch.py", "checkpoint": "checkpoints/best.pt", "epoch": 2, "seed": 42,
             "iw_samples": 100, "bpd": 2.6531, "iw_bpd": 2.61, "per_image_iw_bpd": [2.6, 2.62]}
    written, earlier = write_evaluation(run, "test", first)
    assert earlier is None and "replaced" not in written and run.read_eval("test") == first
    second = {**first, "written_by": "evaluate.py", "seed": 0, "bpd": 2.6515}
    written, earlier = write_evaluation(run, "test", second)
    assert earlier == headline(first) and "per_image_iw_bpd" not in earlier
    assert run.read_eval("test") == written == {**second, "replaced": [headline(first)]}
    third = {**second, "iw_samples": 1000}
    written, earlier = write_evaluation(run, "test", third)
    assert earlier == headline(second) and written["replaced"] == [headline(first), headline(second)]
    again, earlier = write_evaluation(run, "test", {**third, "wall_time_s": 9.0})  # the same evaluation again
    assert earlier is None and again["replaced"] == [headline(first), headline(second)]
    run.eval_path("val").write_text("{not json")
    written, earlier = write_evaluation(run, "val", first)
    assert earlier == {"damaged": "not a JSON object"} and json.loads(run.eval_path("val").read_text()) == written


def test_load_model_names_a_model_too_large_for_memory(tmp_path):
    """A checkpoint whose settings describe a model that cannot be allocated (z_dim 10^9: a terabyte of weights) is
    one line naming the file and the sizes, not "does not match" (the allocator's RuntimeError was caught as one)."""
    save_checkpoint(tmp_path / "huge.pt", {"model": {}, "args": {"z_dim": 10 ** 9, "num_filters": 4}, "epoch": 1})
    with pytest.raises(CheckpointError, match=rf"the model of {tmp_path}/huge.pt \(z_dim 1000000000, num_filters 4\) "
                                              r"does not fit in memory \(could not allocate"):
        load_model(tmp_path / "huge.pt", torch.device("cpu"))
