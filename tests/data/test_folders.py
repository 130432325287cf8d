"""dgmkit/data/folders.py: the data folder a record names, found again: against the run folder, an older record's
absolute or as-typed path, and where a record points when the data are nowhere."""
import shutil
from pathlib import Path

from dgmkit.data.folders import find_data_dir, has_dataset, resolve_data_dir


def test_the_data_folder_of_a_record(micro_data, tmp_path, monkeypatch):
    """Against the run folder first; an older record's relative data_dir (as typed) through find_data_dir's
    lookups; found nowhere: the run folder's reading (an error then names where the record points)."""
    run = tmp_path / "logs" / "run"
    run.mkdir(parents=True)
    shutil.copytree(micro_data, tmp_path / "data")
    assert resolve_data_dir("../../data", run) == (tmp_path / "data").resolve()
    assert resolve_data_dir(str(micro_data), run) == Path(micro_data)
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir("data", run) == (tmp_path / "data").resolve()  # as typed, from the cwd
    assert resolve_data_dir("nowhere", run) == (run / "nowhere").resolve()


def test_find_data_dir_looks_from_here_then_the_repository(micro_data, tmp_path, monkeypatch):
    """An absolute folder as it is; a relative one where it holds the dataset's raw/ folder, from the current folder
    first; found nowhere, as it was given (relative)."""
    shutil.copytree(micro_data, tmp_path / "here")
    monkeypatch.chdir(tmp_path)
    assert find_data_dir("here") == (tmp_path / "here").resolve() and has_dataset(tmp_path / "here", "fashion_mnist")
    assert not has_dataset(tmp_path / "here", "mnist") and find_data_dir("here", "mnist") == Path("here")
    assert find_data_dir(str(tmp_path / "else")) == tmp_path / "else"
