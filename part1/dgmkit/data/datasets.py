"""MNIST and FashionMNIST quantized to B bits (L = 2^B intensity levels; the assignment: FashionMNIST, 4 bits),
held in memory, served in batches.

torchvision downloads the IDX files when they are missing; this module checks and parses the raw files
itself (never torchvision's processed cache), quantizes the whole set once into a uint8 tensor, and
loaders index whole batches from it (no per-sample PIL transform).
"""
import contextlib
import io
import math
import os
import struct
from typing import NamedTuple

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset, Sampler, random_split

from dgmkit.cli.args import resolve_path
from dgmkit.errors import UserError, first_line

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CLASSES = tuple(torchvision.datasets.FashionMNIST.classes)  # the default dataset's (the assignment's name)
SPLIT_SEED = 42  # the assignment's train/val split


class DataSource(NamedTuple):
    folder: str  # root/<folder>/raw/ holds the four IDX files (torchvision's layout)
    torchvision_class: type  # what downloads them
    classes: tuple  # label -> name


# The 2019 edition trains on binarized MNIST (--dataset mnist --bits 1), the 2021 one on 4-bit FashionMNIST
# (the default), the 2022-2025 ones on 4-bit MNIST.
DATASETS = {
    "fashion_mnist": DataSource("FashionMNIST", torchvision.datasets.FashionMNIST, CLASSES),
    "mnist": DataSource("MNIST", torchvision.datasets.MNIST, tuple(str(digit) for digit in range(10))),
}
BITS = range(1, 9)


class DataError(UserError):
    """A problem with the dataset files, with a one-line message meant for the user (exit status 2)."""


def quantize(images, bits=4):
    """uint8 pixels p in 0..255 -> B-bit levels floor(p / 255 * L), L = 2^B, with 255 -> L - 1.

    Integer arithmetic, so exact: floor(L p / 255) equals the real-valued formula for every p (in int16 up to
    B = 7, since 255 * 128 fits: half the temporary memory of int32 for a 60,000-image set; int32 for B = 8,
    where the levels are the pixels themselves).
    Args:
        images: uint8 tensor of any shape; bits: B in 1..8 (4: the assignment's 16 levels).
    Returns:
        uint8 tensor of the same shape with values 0..L-1.
    """
    levels = 2 ** bits
    wide = torch.int16 if bits < 8 else torch.int32
    return (images.to(wide) * levels // 255).clamp_(max=levels - 1).to(torch.uint8)


def train_val_split(num_images, seed=SPLIT_SEED):
    """Indices of a seeded 90/10 train/val split (54,000/6,000 on the full training set).

    Uses `torch.utils.data.random_split` with integer lengths, so on the full set it is the
    split of the assignment's template.
    Returns:
        (train_indices, val_indices): two LongTensors.
    """
    num_val = num_images // 10
    if num_val == 0:
        raise DataError(f"the training set has {num_images} images; at least 10 are needed "
                        "for the 90/10 train/val split")
    train, val = random_split(range(num_images), [num_images - num_val, num_val],
                              generator=torch.Generator().manual_seed(seed))
    return torch.as_tensor(train.indices), torch.as_tensor(val.indices)


class QuantizedImages(Dataset):
    """A split held in memory: images uint8 [N, 1, 28, 28] (levels 0..L-1), labels int64 [N].

    Indexing with a tensor of indices (what EpochBatches yields) returns a whole batch:
    images long [B, 1, 28, 28] and labels [B].
    """

    def __init__(self, images, labels):
        self.images = images
        self.labels = labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        index = torch.as_tensor(index, device=self.images.device)
        return self.images[index].long(), self.labels[index]


def _load_split(root, train, download, dataset="fashion_mnist", bits=4):
    """Read one official split of `dataset` from its checked raw files and quantize it to `bits`:
    (uint8 [N,1,28,28], labels [N])."""
    source = DATASETS[dataset]
    raw_dir = resolve_path(root, "--data_dir") / source.folder / "raw"
    missing = [name for name in RAW_FILES if not (raw_dir / name).is_file()]
    reason = ""
    if missing and download:
        # Folders torchvision creates for a download that then fails are removed again.
        created = [d for d in (raw_dir.parent.parent, raw_dir.parent, raw_dir) if not d.exists()]
        try:
            # torchvision prints every failed mirror; keep the user's terminal to one line.
            with contextlib.redirect_stdout(io.StringIO()):
                source.torchvision_class(root, train=train, download=True)
        except Exception as error:  # no network, proxy, disk full: all end in the same advice
            reason = f"; download failed ({first_line(error).rstrip(': ')})"
        missing = [name for name in RAW_FILES if not (raw_dir / name).is_file()]
        for folder in reversed(created) if missing else ():
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
    if missing:
        raise DataError(f"{source.folder} not found in {raw_dir}{reason}: expected the four files "
                        f"{', '.join(RAW_FILES)} there (uncompressed); download them and pass the "
                        f"folder above {source.folder}/ as --data_dir")
    image_file, label_file = RAW_FILES[:2] if train else RAW_FILES[2:]
    num_images = check_idx(raw_dir / image_file, 0x0803, (28, 28))
    num_labels = check_idx(raw_dir / label_file, 0x0801, ())
    if num_images == 0:
        raise DataError(f"{raw_dir / image_file} holds no images; download it again")
    if num_images != num_labels:
        raise DataError(f"{raw_dir / image_file} holds {num_images} images but {label_file} holds {num_labels} "
                        "labels; replace both files with a matching pair")
    # Parsed here from the raw files just checked, never through torchvision's dataset class, which prefers a
    # cached FashionMNIST/processed/*.pt (unpickled, unchecked, possibly stale) over the raw files.
    images = read_idx(raw_dir / image_file, num_images, (28, 28))  # uint8 [N, 28, 28]
    labels = read_idx(raw_dir / label_file, num_labels, ()).long()  # [N]
    if int(labels.max()) >= len(source.classes):
        raise DataError(f"{raw_dir / label_file} holds label {int(labels.max())}; {source.folder} has "
                        f"{len(source.classes)} classes (0..{len(source.classes) - 1}); download it again")
    return quantize(images, bits).unsqueeze(1), labels


def read_idx(path, count, item_shape):
    """The uint8 payload of an IDX file whose header check_idx accepted: a tensor [count, *item_shape]."""
    header_size = 4 * (2 + len(item_shape))
    try:
        with open(path, "rb") as f:
            f.seek(header_size)
            payload = f.read()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}") from None
    if len(payload) != count * math.prod(item_shape):
        raise DataError(f"{path} changed while it was read; check the file and retry")
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).view(count, *item_shape)


def check_idx(path, magic, item_shape):
    """Check an IDX file's header against its size before read_idx parses it; returns the item count.

    IDX: a big-endian uint32 magic (0x0803: uint8 with 3 dims, 0x0801: 1 dim), one uint32 per
    dimension, then the uint8 data.
    """
    num_dims = 1 + len(item_shape)
    header_size = 4 * (1 + num_dims)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(header_size)
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}; check the file's permissions") from None
    if len(header) < header_size:
        raise DataError(f"{path} is truncated ({size} bytes, shorter than its header); download it again")
    found_magic, count, *dims = struct.unpack(f">{1 + num_dims}I", header)
    if found_magic != magic or tuple(dims) != item_shape:
        raise DataError(f"{path} is not an MNIST-format IDX file (header {found_magic:#010x} {[count, *dims]}, "
                        f"expected {magic:#010x} with items of shape {list(item_shape)}); download it again")
    expected = header_size + count * math.prod(item_shape)
    if size != expected:
        raise DataError(f"{path} is truncated or corrupt: its header promises {count} items ({expected} bytes) "
                        f"but the file has {size} bytes; download it again")
    return count


class EpochBatches(Sampler):
    """Index batches of one epoch: a fresh torch.randperm(n, generator) (or 0..n-1), split in order.

    The batch sampler of both loader paths, so a CPU and a GPU run see the same batches in the
    same order, and the generator's state alone fixes the data order (checkpoints save it).
    """

    def __init__(self, num_items, batch_size, shuffle, generator=None):
        self.num_items, self.batch_size, self.shuffle, self.generator = num_items, batch_size, shuffle, generator

    def order(self):
        """This epoch's permutation, LongTensor [num_items] (draws from the generator when shuffling)."""
        return torch.randperm(self.num_items, generator=self.generator) if self.shuffle else torch.arange(self.num_items)

    def __iter__(self):
        return iter(self.order().split(self.batch_size))

    def __len__(self):
        return -(-self.num_items // self.batch_size)


class DeviceBatches:
    """Batches indexed straight from tensors that live on the device (the CUDA path): the epoch's
    permutation is moved there once, so no step waits for a host-to-device copy."""

    def __init__(self, dataset, batches):
        self.dataset, self.batches = dataset, batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        order = self.batches.order().to(self.dataset.images.device, non_blocking=True)  # [N]
        for index in order.split(self.batches.batch_size):
            yield self.dataset[index]


def _batch_loader(dataset, batch_size, shuffle, num_workers, generator=None):
    """Whole batches indexed from an in-memory dataset: a DataLoader on the CPU, DeviceBatches on a GPU."""
    batches = EpochBatches(len(dataset), batch_size, shuffle, generator)
    if dataset.images.device.type != "cpu":
        return DeviceBatches(dataset, batches)
    return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


def usable_cpus():
    """The logical CPUs this process may use: its affinity mask (so a container's or taskset's limit shows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def usable_workers(num_workers):
    """num_workers, capped at the CPUs this process may use (its affinity mask), saying so in one line on stdout
    (stderr holds only a failure's one line): more workers only compete with training for the cores, and torch
    would add its multi-line warning to stderr. The batches and their order are the same for every count above 0
    (the main process draws them: EpochBatches), so the run's numbers do not change."""
    cpus = usable_cpus()
    if num_workers > cpus:
        print(f"note: --num_workers {num_workers} is more than the {cpus} CPUs this process may use; using {cpus} "
              "worker processes", flush=True)
        return cpus
    return num_workers


def load_data(root, dataset="fashion_mnist", bits=4, batch_size=128, num_workers=0, download=True, generator=None,
              eval_batch_size=None, device=None):
    """Train, validation and test loaders of `dataset` quantized to `bits`.

    Args:
        root: folder holding (or to receive) <FashionMNIST or MNIST>/raw/ with the four IDX files.
        dataset: a key of DATASETS; bits: B in 1..8, L = 2^B levels per pixel.
        batch_size: training images per batch; the last batch of a split may be smaller.
        num_workers: DataLoader worker processes (0 loads in the main process; the data are
            in memory, so workers rarely help), at most the CPUs (usable_workers). Not used when the data live
            on a GPU.
        download: try to download the files when they are missing.
        generator: torch.Generator for the training-set shuffle (None: torch's global RNG).
        eval_batch_size: images per validation/test batch (None: batch_size).
        device: where the whole uint8 dataset is kept (None or CPU: host memory, never
            pinned, so CUDA is not touched; a CUDA device: about 47 MB of GPU memory for
            60,000 images, batches indexed there without host copies).
    Returns:
        (train_loader, val_loader, test_loader), each yielding (images long [B, 1, 28, 28]
        in 0..L-1, labels long [B]); only the training loader shuffles.
    Raises:
        DataError: files missing and not downloadable, or too few images to split.
    """
    device = torch.device(device or "cpu")
    eval_batch_size = eval_batch_size or batch_size
    train_images, train_labels = _load_split(root, True, download, dataset, bits)
    test_images, test_labels = _load_split(root, False, False, dataset, bits)
    train_idx, val_idx = train_val_split(len(train_images))
    splits = [(train_images[train_idx], train_labels[train_idx]), (train_images[val_idx], train_labels[val_idx]),
              (test_images, test_labels)]
    train_set, val_set, test_set = (QuantizedImages(x.to(device), y.to(device)) for x, y in splits)
    # Host batches are not pinned: pinning creates a CUDA context (refused by an exclusive-mode GPU in use) for a run
    # that may never use the GPU, and a CUDA run keeps its data on the GPU (device) instead.
    num_workers = usable_workers(num_workers) if device.type == "cpu" else num_workers
    return (
        _batch_loader(train_set, batch_size, True, num_workers, generator),
        _batch_loader(val_set, eval_batch_size, False, num_workers),
        _batch_loader(test_set, eval_batch_size, False, num_workers),
    )


def fmnist(root, batch_size=128, num_workers=0, download=True, generator=None, eval_batch_size=None, device=None):
    """The assignment's loaders: 4-bit FashionMNIST (load_data with its defaults)."""
    return load_data(root, "fashion_mnist", 4, batch_size, num_workers, download, generator, eval_batch_size, device)
