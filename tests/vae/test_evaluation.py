"""dgmkit/vae/evaluation.py: the VAE rebuilt from a checkpoint, and evaluate.py's pictures (their layout and what
each cell holds: originals, the decoder mean at the posterior mean, interpolations whose ends are the originals)."""
import math

import pytest
import torch

from dgmkit.runs.checkpoints import CheckpointError, save_checkpoint
from dgmkit.vae.evaluation import first_images, interpolation_grid, load_model, reconstruction_grid
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
