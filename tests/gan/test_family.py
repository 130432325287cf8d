"""dgmkit/gan/family.py: the nearest-image labels that pick the interpolation's ends, the last line, and a run's folder
and TensorBoard."""
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_gan
from conftest import GAN_SMALL, train_2019
from dgmkit.gan import family


def test_nearest_labels_by_hand():
    """References of levels 0, 100 and 200 everywhere (labels 7, 3, 5): an image takes the label of the one it is
    closest to in Euclidean distance over its 784 pixels."""
    reference = torch.stack([torch.full((1, 28, 28), v) for v in (0, 100, 200)])
    labels = torch.tensor([7, 3, 5])
    images = torch.stack([torch.full((1, 28, 28), v) for v in (49, 51, 140, 255)])
    assert family.nearest_labels(images, reference, labels).tolist() == [7, 3, 3, 5]
    half = torch.zeros(1, 1, 28, 28)
    half[..., :14] = 200  # half the pixels at 200: distance 200 * sqrt(392) to both 0 and 200; 100 is nearer
    assert family.nearest_labels(half, reference, labels).tolist() == [3]


def test_the_last_line():
    assert family.summary({}) == "no epoch trained"
    metrics = {"final_d_real": 0.61234, "final_d_fake": 0.3, "final_d_loss": 1.23456, "final_g_loss": 0.9}
    assert family.summary(metrics) == "last epoch: D(x) 0.612 | D(G(z)) 0.300 | d_loss 1.2346 | g_loss 0.9000"


def test_gan_run_folder_and_tensorboard(mnist_8bit, tmp_path):
    metrics = train_2019(train_gan, GAN_SMALL, mnist_8bit, tmp_path, 2)
    run = tmp_path / "r"
    assert (run / "interpolation.png").is_file() and not (run / "checkpoints" / "best.pt").exists()
    assert 0 < metrics["final_d_real"] < 1 and 0 < metrics["final_d_fake"] < 1
    events = EventAccumulator(str(run)).Reload()
    assert {"gan/d_loss_train", "gan/g_loss_train", "gan/d_real_train", "gan/d_fake_train"} <= set(
        events.Tags()["scalars"])
    assert {"samples", "interpolation"} <= set(events.Tags()["images"])
