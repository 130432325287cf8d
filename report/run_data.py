"""The data a run read, as every section of the report names it ('FashionMNIST subset: 2,048 train / 509 test images
(`../shared/data`)'), and its test images for the results' brightness measure. A run records its data folder
relative to its run folder (dgmkit/runs/paths.py), so each function takes the run folder that holds the record.

Which data (dataset and bits) a run trained on and was evaluated on, `data_key`, is what every comparison checks
first: runs on different data are refused in one line (`same_data`), and headings name the runs' own data.
"""
import os
from pathlib import Path

import torch

from dgmkit.cli.runner import one_line
from dgmkit.data.datasets import BITS, DATASETS, DataError, check_idx, quantize
from dgmkit.data.folders import find_data_dir, resolve_data_dir
from dgmkit.errors import UserError
from dgmkit.gan.config import GANConfig
from dgmkit.places import REPO_ROOT
from dgmkit.realnvp.config import RealNVPConfig
from dgmkit.vae.config import TrainConfig
from formats import DASH, count

FAMILIES = {"vae": TrainConfig, "gan": GANConfig, "realnvp": RealNVPConfig}


def family(args):
    """'gan', 'realnvp' or 'vae': the family whose own settings a run's args.json holds."""
    return "gan" if "latent_dim" in args else "realnvp" if "hidden_channels" in args else "vae"


def args_data(args):
    """(dataset, bits) of a run's args.json; a record from before those flags has its family's defaults (the VAE's:
    fashion_mnist, 4)."""
    defaults = FAMILIES[family(args)].defaults()
    return args.get("dataset", defaults["dataset"]), args.get("bits", defaults["bits"])


def data_key(run):
    """(dataset, bits) of a run (dgmkit.runs.finished.load_run): its args.json's, and its eval_test.json's where that
    records them; a one-line UserError when the two disagree (an evaluation on other data than the training's)."""
    trained = args_data(run["args"])
    if not isinstance(trained[0], str) or trained[0] not in DATASETS or type(trained[1]) is not int or \
            trained[1] not in BITS:
        raise UserError(f"{one_line(Path(run['dir']) / 'args.json')}: dataset {str(trained[0])[:40]!r} at bits "
                        f"{str(trained[1])[:40]!r} is no dataset of part1 ({', '.join(DATASETS)}; bits 1-8); the file "
                        "is damaged or from another program")
    evaluation = run.get("eval") or {}
    evaluated = (evaluation.get("dataset", trained[0]), evaluation.get("bits", trained[1]))
    if evaluated != trained:
        raise UserError(f"{one_line(Path(run['dir']) / 'eval_test.json')} evaluates {data_name(evaluated)}, but the "
                        f"run trained on {data_name(trained)} (args.json); rerun evaluate.py on the run's own data")
    return trained


def data_name(key):
    """'4-bit FashionMNIST', 'binary MNIST' (1 bit) of a (dataset, bits) key."""
    dataset, bits = key
    folder = DATASETS[dataset].folder if dataset in DATASETS else str(dataset)
    return f"binary {folder}" if bits == 1 else f"{bits}-bit {folder}"


def same_data(runs, what):
    """The one (dataset, bits) of `runs`; runs on different data are a one-line UserError naming two of them and
    `what` the runs were given for."""
    keys = {}
    for run in runs:
        keys.setdefault(data_key(run), run["name"])
    if len(keys) > 1:
        (a, first), (b, second) = list(keys.items())[:2]
        raise UserError(f"{what}: `{first}` is on {data_name(a)} but `{second}` on {data_name(b)} (args.json, "
                        "eval_test.json): runs on different data (dataset or bits) are not compared; give runs on "
                        "one dataset at one bit depth")
    return next(iter(keys), None)


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
    # The folder as the record names it (no links resolved: ../shared may be a link), else as it was found.
    named = [Path(os.path.normpath(Path(run_dir).absolute() / data_dir))] if run_dir else []
    named = [place for place in named if place.is_dir()]  # older records name it from where the run was started
    shown = next((Path("..") / place.relative_to(REPO_ROOT.parent) for place in (*named, root)  # e.g. ../shared/data
                  if place.is_absolute() and place.is_relative_to(REPO_ROOT.parent)), Path(data_dir))
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
    text = describe_data(args.get("data_dir"), args_data(args)[0], run_dir)
    return text if folder else text.split(" (`")[0]


def real_test_images(args, run_dir=None):
    """The quantized test images [N, 28, 28] of a run's data folder (its args: data_dir, dataset, bits; recorded in
    the run folder run_dir), or None when they cannot be read."""
    if not args.get("data_dir"):
        return None
    dataset, bits = args_data(args)
    raw = data_root(args["data_dir"], dataset, run_dir) / DATASETS[dataset].folder / "raw"
    path = raw / "t10k-images-idx3-ubyte"
    try:
        num = check_idx(path, 0x0803, (28, 28))
    except (OSError, DataError):
        return None
    pixels = torch.frombuffer(bytearray(path.read_bytes()[16:]), dtype=torch.uint8).view(num, 28, 28)
    return quantize(pixels, bits).numpy().astype(int)
