"""dgmkit/data/datasets.py: exact quantization of hand-made IDX files at every bit depth (against its formula in exact
rational arithmetic), the seeded train/validation split, loaders that keep images with their labels and follow the
generator, the CUDA path's DeviceBatches, MNIST from its own folder, missing files in one line, and torchvision's
cache never read. The assignment's fmnist module: tests/test_fmnist.py."""
import math
import os
from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import generated_data, make_images, write_idx
from dgmkit.data.datasets import (RAW_FILES, DataError, DeviceBatches, EpochBatches, QuantizedImages, fmnist,
                                  load_data, quantize, train_val_split, usable_workers)


def test_quantize_all_256_values():
    pixels = np.arange(256)
    expected = np.minimum(np.floor(pixels / 255 * 16), 15)  # the definition, in float64
    got = quantize(torch.arange(256, dtype=torch.uint8))
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("bits", range(1, 9))
def test_quantize_every_bit_depth_on_all_256_values(bits):
    """level = floor(p / 255 * L), L = 2^B, with 255 -> L - 1, in exact rational arithmetic."""
    levels = 2 ** bits
    expected = [min(math.floor(Fraction(p, 255) * levels), levels - 1) for p in range(256)]
    assert quantize(torch.arange(256, dtype=torch.uint8), bits).tolist() == expected
    assert expected[0] == 0 and expected[255] == levels - 1 and len(set(expected)) == levels


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


def test_more_workers_than_cpus_are_capped_in_one_line_without_torchs_warning(tiny_data, capsys, recwarn):
    """Issue 25, cause 18: torch's multi-line DataLoader warning is never raised; the cap is said once, on stdout
    (stderr is a failure's one line), and the batches are those of any other worker count (here 1)."""
    cpus = len(os.sched_getaffinity(0))
    loaders = fmnist(tiny_data, batch_size=64, num_workers=cpus + 3, download=False,
                     generator=torch.Generator().manual_seed(1))
    assert [loader.num_workers for loader in loaders] == [cpus] * 3
    first = next(iter(loaders[0]))
    out, err = capsys.readouterr()
    assert out == (f"note: --num_workers {cpus + 3} is more than the {cpus} CPUs this process may use; using {cpus} "
                   "worker processes\n") and err == ""
    assert not [w for w in recwarn if "worker" in str(w.message)]
    one = next(iter(fmnist(tiny_data, batch_size=64, num_workers=1, download=False,
                           generator=torch.Generator().manual_seed(1))[0]))
    assert all(torch.equal(a, b) for a, b in zip(first, one))
    assert usable_workers(cpus) == cpus and usable_workers(0) == 0 and capsys.readouterr() == ("", "")


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


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    return generated_data(tmp_path_factory.mktemp("mnist"), 120, 30, seed=3, folder="MNIST")


def test_mnist_loads_from_its_own_folder(mnist_data):
    train, val, test = load_data(mnist_data, "mnist", 1, batch_size=64, download=False)
    assert (len(train.dataset), len(val.dataset), len(test.dataset)) == (108, 12, 30)
    assert set(torch.unique(test.dataset.images).tolist()) <= {0, 1}
    with pytest.raises(Exception, match="FashionMNIST not found"):
        load_data(mnist_data, "fashion_mnist", 4, download=False)


def test_a_damaged_torchvision_cache_is_never_read(tmp_path):
    """torchvision's dataset class prefers FashionMNIST/processed/*.pt (unpickled) over the raw files; the
    project parses the checked raw files itself, so garbage there changes nothing."""
    images, labels = make_images(40, 0)
    root = write_idx(tmp_path, images, labels, images[:10], labels[:10])
    (root / "FashionMNIST" / "processed").mkdir()
    for name in ("training.pt", "test.pt"):
        (root / "FashionMNIST" / "processed" / name).write_bytes(b"\x80\x04 not a pickle")
    train, val, test = fmnist(root, batch_size=64, download=False)
    everything = torch.cat([train.dataset.images, val.dataset.images]).squeeze(1)  # the 36 + 4 training images
    assert sorted(map(bytes, everything.numpy())) == sorted(map(bytes, quantize(torch.as_tensor(images)).numpy()))
    assert torch.equal(test.dataset.images.squeeze(1), quantize(torch.as_tensor(images[:10])))
    assert torch.equal(test.dataset.labels, torch.as_tensor(labels[:10]).long())


def test_host_batches_are_not_pinned_so_a_cpu_run_never_touches_cuda(tmp_path, monkeypatch):
    """Issue 26 #6: pinning (when CUDA was merely available) created a CUDA context for a CPU run."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with a GPU
    root = generated_data(tmp_path, 40, 10, seed=0)
    for loader in load_data(root, batch_size=8):
        assert loader.pin_memory is False
