"""fmnist.py, the assignment's data module: its names are the kit's (dgmkit/data/datasets.py), and fmnist(root, ...)
gives the assignment's 4-bit loaders, checked on hand-made IDX files."""
import numpy as np
import torch

import fmnist as assignment
from conftest import make_images, write_idx
from dgmkit.data import datasets
from fmnist import fmnist


def test_the_assignments_names_are_the_kits():
    assert {"fmnist", "quantize", "train_val_split", "CLASSES", "DataError"} <= set(assignment.__all__)
    for name in assignment.__all__:
        assert getattr(assignment, name) is getattr(datasets, name), name


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
