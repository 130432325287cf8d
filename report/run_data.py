"""The data a run read, as every section of the report names it ('FashionMNIST subset: 2,048 train / 509 test images
(`../shared/data`)'), and its test images for the results' brightness measure.
"""
from pathlib import Path

import torch

from dgmkit.data.datasets import DATASETS, DataError, check_idx, quantize
from dgmkit.vae.config import REPO_ROOT, find_data_dir
from formats import DASH, count


def describe_data(data_dir, dataset="fashion_mnist"):
    """'FashionMNIST subset: 2,048 train / 509 test images (`DIR`)' (or MNIST), or the folder when it is not found."""
    if not data_dir:
        return DASH
    root = find_data_dir(data_dir, dataset)
    shown = Path(data_dir)
    if shown.is_absolute() and shown.is_relative_to(REPO_ROOT.parent):
        shown = Path("..") / shown.relative_to(REPO_ROOT.parent)  # e.g. ../shared/data, as the README says
    counts = []
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        try:
            counts.append(check_idx(root / DATASETS[dataset].folder / "raw" / name, 0x0803, (28, 28)))
        except (OSError, DataError):
            return f"`{shown.as_posix()}`"
    folder = DATASETS[dataset].folder
    kind = f"full {folder}" if counts == [60000, 10000] else f"{folder} subset"
    return f"{kind}: {count(counts[0])} train / {count(counts[1])} test images (`{shown.as_posix()}`)"


def describe_run_data(args, folder=True):
    """describe_data of a run's args.json (its data_dir and dataset); folder=False leaves out the ' (`DIR`)'."""
    text = describe_data(args.get("data_dir"), args.get("dataset", "fashion_mnist"))
    return text if folder else text.split(" (`")[0]


def real_test_images(args):
    """The quantized test images [N, 28, 28] of a run's data folder (its args: data_dir, dataset, bits), or None
    when they cannot be read."""
    if not args.get("data_dir"):
        return None
    dataset = args.get("dataset", "fashion_mnist")
    raw = find_data_dir(args["data_dir"], dataset) / DATASETS[dataset].folder / "raw"
    path = raw / "t10k-images-idx3-ubyte"
    try:
        num = check_idx(path, 0x0803, (28, 28))
    except (OSError, DataError):
        return None
    pixels = torch.frombuffer(bytearray(path.read_bytes()[16:]), dtype=torch.uint8).view(num, 28, 28)
    return quantize(pixels, args.get("bits", 4)).numpy().astype(int)
