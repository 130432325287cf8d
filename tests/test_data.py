"""fmnist.py: exact 4-bit quantization of hand-made IDX files, the seeded split, loaders, missing files."""
import numpy as np
import pytest
import torch

from conftest import make_images, write_idx
from dgmkit.data.datasets import (RAW_FILES, DataError, DeviceBatches, EpochBatches, QuantizedImages, quantize,
                                  train_val_split)
from fmnist import fmnist


def test_quantize_all_256_values():
    pixels = np.arange(256)
    expected = np.minimum(np.floor(pixels / 255 * 16), 15)  # the definition, in float64
    got = quantize(torch.arange(256, dtype=torch.uint8))
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.numpy(), expected)


def test_quantization_through_the_loaders(tmp_path):
    """Hand-made test images: pixel values 0, 15, 16, 255 and every level 0..255 in turn."""
    special = np.zeros((2, 28, 28), dtype=np.uint8)
    special[0, 0, :4] = [0, 15, 16, 255]
    special[1].flat[:256] = np.arange(256)
    train_images, train_labels = make_images(20, seed=0)
    write_idx(tmp_path, train_images, train_labels, special, [3, 7])
    _, _, test_loader = fmnist(tmp_path, batch_size=8, download=False)
    images, labels = next(iter(test_loader))
    assert images.dtype == torch.long and images.shape == (2, 1, 28, 28)
    assert images[0, 0, 0, :4].tolist() == [0, 0, 1, 15]
    assert images[1, 0].flatten()[:256].tolist() == [min(p * 16 // 255, 15) for p in range(256)]
    assert labels.tolist() == [3, 7]


def test_split_sizes_and_determinism():
    train, val = train_val_split(60_000)
    assert (len(train), len(val)) == (54_000, 6_000)
    assert len(set(train.tolist()) | set(val.tolist())) == 60_000
    train_small, val_small = train_val_split(2_048)
    assert (len(train_small), len(val_small)) == (1_844, 204)
    again = train_val_split(2_048)
    assert torch.equal(train_small, again[0]) and torch.equal(val_small, again[1])
    assert not torch.equal(train_small, torch.arange(1_844))  # shuffled, not a prefix
    with pytest.raises(DataError, match="at least 10"):
        train_val_split(9)


def test_loaders_keep_images_with_their_labels(tmp_path):
    """Every image is filled with its own label; after split and shuffle the pairs must still match."""
    labels = np.arange(100) % 10
    images = np.repeat((labels * 17).astype(np.uint8)[:, None, None], 28, 1).repeat(28, 2)  # 17*l -> level l
    write_idx(tmp_path, images, labels, images[:30], labels[:30])
    train_loader, val_loader, test_loader = fmnist(tmp_path, batch_size=16, download=False)
    assert (len(train_loader.dataset), len(val_loader.dataset), len(test_loader.dataset)) == (90, 10, 30)
    assert len(train_loader) == 6  # ceil(90 / 16): the last, smaller batch is kept
    seen = 0
    for loader in (train_loader, val_loader, test_loader):
        for imgs, labs in loader:
            assert imgs.dtype == torch.long and imgs.shape[1:] == (1, 28, 28)
            assert torch.equal(imgs[:, 0, 0, 0], labs * 17 * 16 // 255)
            assert torch.equal(imgs.amin(dim=(1, 2, 3)), imgs.amax(dim=(1, 2, 3)))
            seen += len(imgs)
    assert seen == 130


def test_training_order_follows_the_generator(tiny_data):
    def first_labels(seed):
        loader = fmnist(tiny_data, batch_size=32, download=False, generator=torch.Generator().manual_seed(seed))[0]
        return next(iter(loader))[1]
    assert torch.equal(first_labels(5), first_labels(5))
    assert not torch.equal(first_labels(5), first_labels(6))


def test_missing_files_raise_one_line_error(tmp_path):
    with pytest.raises(DataError) as info:
        fmnist(tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "FashionMNIST" / "raw") in message
    assert all(name in message for name in RAW_FILES)


def test_device_batches_match_the_dataloader(tiny_data):
    """The CUDA path's loader (DeviceBatches), run here on CPU tensors: same batches, same order."""
    loader = fmnist(tiny_data, batch_size=32, download=False, generator=torch.Generator().manual_seed(3))[0]
    dataset = loader.dataset
    device_batches = DeviceBatches(QuantizedImages(dataset.images, dataset.labels),
                                   EpochBatches(len(dataset), 32, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert len(device_batches) == len(loader) == 9  # ceil(270 / 32)
    for _ in range(2):  # two epochs: the generator advances identically
        for (a, la), (b, lb) in zip(loader, device_batches, strict=True):
            assert torch.equal(a, b) and torch.equal(la, lb) and b.dtype == torch.long
