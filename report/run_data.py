"""The data a run read, as every section of the report names it ('FashionMNIST subset: 2,048 train / 509 test images
(`../shared/data`)'), and its test images for the results' brightness measure. A run records its data folder
relative to its run folder (dgmkit/runs/paths.py), so each function takes the run folder that holds the record.
"""
from pathlib import Path

import torch

from dgmkit.data.datasets import DATASETS, DataError, check_idx, quantize
from dgmkit.places import REPO_ROOT
from dgmkit.data.folders import find_data_dir, resolve_data_dir
from formats import DASH, count


def data_root(data_dir, dataset="fashion_mnist", run_dir=None):
    """The folder a record's data_dir names: resolved against the run folder `run_dir` that holds the record
    (dgmkit.data.folders.resolve_data_dir), or, without one, looked up as typed (find_data_dir)."""
    return find_data_dir(data_dir, dataset) if run_dir is None else resolve_data_dir(data_dir, run_dir, dataset)


def describe_data(data_dir, dataset="fashion_mnist", run_dir=None):
    """'FashionMNIST subset: 2,048 train / 509 test images (`DIR`)' (or MNIST), or the folder when it is not found;
    DIR is shown from the repository's parent ('../shared/data') when the data sit beside the checkout."""
    if not data_dir:
        return DASH
    root = data_root(data_dir, dataset, run_dir)
    shown = root if root.is_absolute() and root.is_relative_to(REPO_ROOT.parent) else Path(data_dir)
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


def describe_run_data(args, folder=True, run_dir=None):
    """describe_data of a run's args.json (its data_dir and dataset) in the run folder run_dir; folder=False leaves
    out the ' (`DIR`)'."""
    text = describe_data(args.get("data_dir"), args.get("dataset", "fashion_mnist"), run_dir)
    return text if folder else text.split(" (`")[0]


def real_test_images(args, run_dir=None):
    """The quantized test images [N, 28, 28] of a run's data folder (its args: data_dir, dataset, bits; recorded in
    the run folder run_dir), or None when they cannot be read."""
    if not args.get("data_dir"):
        return None
    dataset = args.get("dataset", "fashion_mnist")
    raw = data_root(args["data_dir"], dataset, run_dir) / DATASETS[dataset].folder / "raw"
    path = raw / "t10k-images-idx3-ubyte"
    try:
        num = check_idx(path, 0x0803, (28, 28))
    except (OSError, DataError):
        return None
    pixels = torch.frombuffer(bytearray(path.read_bytes()[16:]), dtype=torch.uint8).view(num, 28, 28)
    return quantize(pixels, args.get("bits", 4)).numpy().astype(int)
