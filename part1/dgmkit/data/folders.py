"""Where a dataset's files are: a folder holding <data_dir>/<FashionMNIST|MNIST>/raw/, found from what a run
recorded. A run records its data folder relative to its run folder (dgmkit/runs/paths.py); older versions recorded
it absolute, or relative as typed (to the folder the command ran in), and those records keep working.
"""
from pathlib import Path

from dgmkit.cli.args import absolute
from dgmkit.data.datasets import DATASETS
from dgmkit.places import PART1_DIR, REPO_ROOT


def has_dataset(data_dir, dataset):
    """Whether `data_dir` holds the dataset's raw/ folder (the files themselves are checked when loaded)."""
    return (Path(data_dir) / DATASETS[dataset].folder / "raw").is_dir()


def find_data_dir(data_dir, dataset="fashion_mnist"):
    """A run's data_dir; a relative one (older runs stored it as typed) is looked up from here, the repo
    root, then part1/ (where it holds the dataset's raw/ folder)."""
    data_dir = Path(data_dir)
    if data_dir.is_absolute():
        return data_dir
    for base in (Path.cwd(), REPO_ROOT, PART1_DIR):
        if (base / data_dir / DATASETS[dataset].folder / "raw").is_dir():
            return (base / data_dir).resolve()
    return data_dir


def resolve_data_dir(recorded, run_dir, dataset="fashion_mnist"):
    """The data folder a record of the run folder `run_dir` names: absolute, as it is; relative, the run folder's
    reading when the dataset is there, else find_data_dir's (a relative data_dir of an older version, as typed:
    looked up from the current folder, the repository root, part1/), else the run folder's reading."""
    path = Path(recorded).expanduser()
    if path.is_absolute():
        return path
    against_run = absolute(absolute(run_dir) / path)
    if has_dataset(against_run, dataset):
        return against_run
    found = find_data_dir(path, dataset)
    return found if found.is_absolute() else against_run
