"""The assignment's data module name: fmnist(root, batch_size, num_workers, download) gives the 4-bit
FashionMNIST loaders. Everything lives in dgmkit/data/datasets.py (MNIST and FashionMNIST at any bit depth); this module
keeps the assignment's names importable."""
from dgmkit.data.datasets import (CLASSES, RAW_FILES, DataError, DeviceBatches, EpochBatches, QuantizedImages,
                                  check_idx, fmnist, quantize, train_val_split)

__all__ = ["CLASSES", "RAW_FILES", "DataError", "DeviceBatches", "EpochBatches", "QuantizedImages", "check_idx",
           "fmnist", "quantize", "train_val_split"]
