"""Run records travel (dgmkit/runs/paths.py): a run records its paths relative to its run folder, so a run folder
copied elsewhere (with its data at the same place relative to it, or with --data_dir) still evaluates and
resumes; the typed and the recorded folder compare as folders; records of older versions (absolute paths, or a
data_dir relative to where the command ran) still work."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import evaluate
import train_realnvp
import train_torch
from conftest import SMALL, error_line, generated_data
from dgmkit.runs import paths
from dgmkit.runs.checkpoints import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

VAE = [*SMALL, "--final_iw_samples", "2"]  # SMALL, with the test phase's eval_test.json
REALNVP = ["--device", "cpu", "--no-progress_bar", "--sample_epochs", "--batch_size", "32", "--hidden_channels", "4",
           "--num_blocks", "1", "--couplings", "1", "--final_draws", "2", "--epochs", "1"]
EVALUATE = ["--iw_samples", "2", "--device", "cpu"]


def absolute_strings(value, where=""):
    """[(where, string)] of every string in a JSON-like value that is an absolute path."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in absolute_strings(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in absolute_strings(item, f"{where}[{i}]")]
    return [(where, value)] if isinstance(value, str) and os.path.isabs(value) else []


def records(run_dir):
    """Every record of a run folder: its JSON files and each checkpoint's args, by name."""
    found = {p.name: json.loads(p.read_text()) for p in sorted(Path(run_dir).glob("*.json"))}
    for path in sorted((Path(run_dir) / "checkpoints").glob("*.pt")):
        found[f"checkpoints/{path.name}"] = torch.load(path, weights_only=True)["args"]
    return found


def assert_no_absolute_path(run_dir):
    for name, record in records(run_dir).items():
        assert not absolute_strings(record), (name, absolute_strings(record))


@pytest.fixture(scope="module")
def site(micro_data, tmp_path_factory):
    """site/data (FashionMNIST and MNIST) and site/logs/vae, a finished 2-epoch VAE run with its test phase's
    eval_test.json, trained from site/ with relative --data_dir and --log_dir."""
    root = tmp_path_factory.mktemp("site")
    shutil.copytree(micro_data, root / "data")
    generated_data(root / "data", 80, 20, seed=11, folder="MNIST")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        train_torch.main(train_torch.parse_args(["--data_dir", "data", "--log_dir", "logs", "--run_name", "vae",
                                                 *VAE]))
    finally:
        os.chdir(cwd)
    return root


def copy_site(site, to, data=True):
    """A copy of the site's run folder at to/logs/vae, with the data at to/data when `data`; returns the run."""
    shutil.copytree(site / "logs" / "vae", to / "logs" / "vae")
    if data:
        shutil.copytree(site / "data", to / "data")
    return to / "logs" / "vae"


# ---- the module -----------------------------------------------------------------------------------------------

def test_a_path_is_recorded_relative_to_the_folder_and_resolved_against_it(tmp_path):
    run = tmp_path / "logs" / "run"
    run.mkdir(parents=True)
    assert paths.record(tmp_path / "data", run) == os.path.join("..", "..", "data")
    assert paths.record(run / "checkpoints" / "best.pt", run) == os.path.join("checkpoints", "best.pt")
    assert paths.record(run, run) == "." and paths.record(None, run) is None
    assert paths.resolve("../../data", run) == tmp_path.resolve() / "data"
    assert paths.resolve("/elsewhere/data", run) == Path("/elsewhere/data")  # older records: as they are
    assert paths.resolve(None, run) is None
    settings = {"z_dim": 2, "data_dir": str(tmp_path / "data"), "log_dir": str(tmp_path / "logs"), "resume": None}
    recorded = paths.record_settings(settings, run)
    assert list(recorded) == list(settings) and recorded == {**settings, "data_dir": "../../data", "log_dir": ".."}


def test_a_typed_path_is_recorded_from_the_current_folder(tmp_path, monkeypatch):
    run = tmp_path / "logs" / "run"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "logs")
    assert paths.record("../data", run) == "../../data" and paths.record("run", run) == "."
    assert paths.same_folder("run/..", paths.resolve("..", run)) and not paths.same_folder("run", tmp_path)


def test_a_command_line_records_its_paths_relative_to_the_file(tmp_path):
    out = tmp_path / "results" / "bench.json"
    argv = ["/x/part1/benchmark.py", "--steps", "3", "--out", str(out), f"--data_dir={tmp_path / 'data'}"]
    assert paths.record_command(argv, (out, tmp_path / "data"), out.parent) == (
        "benchmark.py --steps 3 --out bench.json --data_dir=../data")


# ---- new runs record no absolute path ------------------------------------------------------------------------

def test_a_new_run_records_its_paths_relative_to_its_folder(site):
    run = site / "logs" / "vae"
    found = records(run)
    assert {"args.json", "eval_test.json", "metrics.json", "checkpoints/best.pt", "checkpoints/last.pt"} <= set(found)
    for name in ("args.json", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (found[name]["data_dir"], found[name]["log_dir"], found[name]["resume"]) == ("../../data", "..", None)
    assert found["eval_test.json"]["checkpoint"] == "checkpoints/best.pt"
    assert found["eval_test.json"]["data_dir"] == "../../data"
    assert_no_absolute_path(run)


def test_a_realnvp_run_records_its_paths_relative_to_its_folder(site, tmp_path):
    shutil.copytree(site / "data", tmp_path / "data")
    train_realnvp.main(train_realnvp.parse_args(["--data_dir", str(tmp_path / "data"), "--log_dir",
                                                 str(tmp_path / "logs"), "--run_name", "flow", *REALNVP]))
    found = records(tmp_path / "logs" / "flow")
    assert found["eval_test.json"]["checkpoint"] == "checkpoints/best.pt"
    assert found["eval_test.json"]["data_dir"] == found["args.json"]["data_dir"] == "../../data"
    assert_no_absolute_path(tmp_path / "logs" / "flow")


# ---- a copied run folder evaluates and resumes ---------------------------------------------------------------

def test_a_copy_with_its_data_evaluates_and_resumes_without_data_dir(site, tmp_path, monkeypatch):
    run = copy_site(site, tmp_path / "moved")
    monkeypatch.chdir(tmp_path)  # nothing found from here: the data are found against the run folder
    result = evaluate.main(evaluate.parse_args([str(run), *EVALUATE]))
    assert result["num_images"] == 20
    assert (result["checkpoint"], result["data_dir"]) == ("checkpoints/best.pt", "../../data")
    metrics = train_torch.main(train_torch.parse_args(["--resume", str(run), "--epochs", "3"]))
    assert metrics["epochs"] == 3 and len((run / "history.jsonl").read_text().splitlines()) == 3
    args = json.loads((run / "args.json").read_text())
    assert (args["data_dir"], args["log_dir"], args["resume"]) == ("../../data", "..", ".")
    assert_no_absolute_path(run)


def test_a_copy_without_its_data_evaluates_and_resumes_with_data_dir(site, tmp_path, monkeypatch):
    run = copy_site(site, tmp_path / "moved", data=False)
    shutil.copytree(site / "data", tmp_path / "elsewhere" / "data")
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = evaluate.main(evaluate.parse_args([str(run), "--data_dir", "data", *EVALUATE]))
    assert result["num_images"] == 20 and result["data_dir"] == "../../../elsewhere/data"
    train_torch.main(train_torch.parse_args(["--resume", str(run), "--epochs", "3", "--data_dir", "data"]))
    args = json.loads((run / "args.json").read_text())
    assert args["data_dir"] == "../../../elsewhere/data" and args["epochs"] == 3
    assert_no_absolute_path(run)


def test_a_copy_without_its_data_names_where_its_record_points(site, tmp_path, monkeypatch, capsys):
    run = copy_site(site, tmp_path / "moved", data=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        evaluate.cli([str(run), *EVALUATE])
    assert stop.value.code == 2
    assert str((tmp_path / "moved" / "data").resolve()) in error_line(capsys)


def test_resume_compares_the_typed_folders_with_the_recorded_ones(site, tmp_path, monkeypatch, capsys):
    """--log_dir and --data_dir typed relative to the current folder equal the recorded ones (relative to the
    run folder) when they name the same folder; another --log_dir is refused in one line."""
    run = copy_site(site, tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "moved")
    with pytest.raises(SystemExit) as stop:
        train_torch.cli(["--resume", "logs/vae", "--epochs", "3", "--log_dir", "elsewhere"])
    assert stop.value.code == 2 and "--log_dir elsewhere differs from the resumed run's" in error_line(capsys)
    train_torch.main(train_torch.parse_args(["--resume", "logs/vae", "--epochs", "3", "--log_dir", "logs",
                                             "--data_dir", "./data/"]))
    assert len((run / "history.jsonl").read_text().splitlines()) == 3


# ---- records of older versions ---------------------------------------------------------------------------------

def make_old(run, data_dir, log_dir):
    """Rewrite a run's args.json and checkpoints' args as an older version wrote them."""
    for path in (run / "checkpoints").glob("*.pt"):
        state = load_checkpoint(path)
        state["args"].update(data_dir=str(data_dir), log_dir=str(log_dir))
        save_checkpoint(path, state)
    args = json.loads((run / "args.json").read_text())
    (run / "args.json").write_text(json.dumps({**args, "data_dir": str(data_dir), "log_dir": str(log_dir)}))


def test_an_old_record_with_absolute_paths_resumes_and_evaluates(site, tmp_path, monkeypatch):
    run = copy_site(site, tmp_path / "old", data=False)
    make_old(run, (site / "data").resolve(), run.parent.resolve())
    monkeypatch.chdir(tmp_path)
    assert evaluate.main(evaluate.parse_args([str(run), *EVALUATE]))["num_images"] == 20
    train_torch.main(train_torch.parse_args(["--resume", str(run), "--epochs", "3", "--log_dir",
                                             str(run.parent.resolve())]))
    args = json.loads((run / "args.json").read_text())
    assert paths.resolve(args["data_dir"], run) == (site / "data").resolve() and args["log_dir"] == ".."


def test_an_old_record_with_data_dir_as_typed_resumes_from_where_it_ran(site, tmp_path, monkeypatch):
    run = copy_site(site, tmp_path / "old", data=False)
    shutil.copytree(site / "data", tmp_path / "typed_data")
    make_old(run, "typed_data", run.parent.resolve())
    monkeypatch.chdir(tmp_path)
    train_torch.main(train_torch.parse_args(["--resume", str(run), "--epochs", "3"]))
    assert json.loads((run / "args.json").read_text())["data_dir"] == "../../../typed_data"


def test_a_moved_run_lives_in_its_new_folder(site, tmp_path, monkeypatch):
    """An old record's absolute log_dir names the folder the run was written in, on another machine; resumed where
    it is now, the run's log_dir is its new parent (args.json: ".."), and --log_dir may name that folder."""
    run = copy_site(site, tmp_path / "moved", data=False)
    make_old(run, (site / "data").resolve(), "/home/someone/else/logs")
    monkeypatch.chdir(tmp_path)
    train_torch.main(train_torch.parse_args(["--resume", str(run), "--epochs", "3", "--log_dir", str(run.parent)]))
    assert json.loads((run / "args.json").read_text())["log_dir"] == ".."
