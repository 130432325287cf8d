"""The second adversarial round (issue 18): links planted in a run folder, run names that leave --log_dir,
checkpoints that contradict themselves, damaged run files under make_figures, paths the OS refuses, a signal at
start-up, a history shorter than its checkpoint, two processes on one run folder, a sweep's failed run. Every
refusal keeps the contract of cli_contract.py (one line, exit 2, nothing changed); the rest check what is kept by
hand. The round's unit checks live with their modules: a damaged torchvision cache (tests/data/test_datasets.py),
a signal during a write (tests/runs/test_atomic_io.py), the resume command with spaces (tests/runs/test_folder.py),
a benchmark on a training set smaller than its measurement (tests/test_benchmark.py)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import evaluate
import make_figures  # noqa: E402
import sweep
import train_torch
from cli_contract import Case, edit_checkpoint, params, run_case
from conftest import PART1, REPO_ROOT, SMALL, generated_data
from dgmkit.errors import UserError
from dgmkit.runs.atomic_io import remove_stale_tmp
from dgmkit.runs.checkpoints import load_checkpoint
from dgmkit.runs.folder import RunDir


@pytest.fixture
def ctx(run_ctx):
    """The copy of the shared finished run (tmp/run), a file outside it (tmp/outside.txt) that no case may touch,
    and the run's data folder (ctx.data)."""
    (run_ctx.tmp / "outside.txt").write_text("a user's file\n")
    run_ctx.data = json.loads((run_ctx.run / "args.json").read_text())["data_dir"]
    return run_ctx


def edit_last(edit):
    return lambda c: edit_checkpoint(c.run / "checkpoints" / "last.pt", edit)


def resume(*flags):
    return lambda c: ["--resume", c.run, "--epochs", "3", *flags]


def reshape_first_weight(state):
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name].flatten()[:3].clone()


def optimizer_of_other_shape(state):
    entry = next(iter(state["optimizer"]["state"].values()))
    entry["exp_avg"] = torch.zeros(3, 3)


def link(target):
    def plant(path):
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    return plant


CHECKPOINT_CASES = [
    Case("weights-of-another-shape", resume(), 2, ("weights do not match",), setup=edit_last(reshape_first_weight)),
    Case("optimizer-of-another-shape", resume(), 2, ("optimizer state does not match",),
         setup=edit_last(optimizer_of_other_shape)),
    Case("torch-rng-of-the-wrong-size", resume(), 2, ("random states are damaged",),
         setup=edit_last(lambda s: s["rng"].__setitem__("torch", torch.zeros(10, dtype=torch.uint8)))),
    Case("python-rng-of-the-wrong-size", resume(), 2, ("random states are damaged",),
         setup=edit_last(lambda s: s["rng"].__setitem__("python", [1, 2, 3]))),
    Case("data-order-rng-damaged", resume(), 2, ("random states are damaged",),
         setup=edit_last(lambda s: s["rng"].__setitem__("data_order", torch.zeros(7, dtype=torch.uint8)))),
    Case("epoch-zero", resume(), 2, ("contradicts itself", "epoch 0 < 1"),
         setup=edit_last(lambda s: s.__setitem__("epoch", 0))),
    Case("best-epoch-after-epoch", resume(), 2, ("contradicts itself", "best_epoch 9 outside 0..2"),
         setup=edit_last(lambda s: s.__setitem__("best_epoch", 9))),
    Case("negative-wall-time", resume(), 2, ("contradicts itself", "wall_time_s -1.0"),
         setup=edit_last(lambda s: s.__setitem__("wall_time_s", -1.0))),
    Case("history-of-other-epochs", resume(), 2, ("contradicts itself", "one record per epoch 1..2"),
         setup=edit_last(lambda s: s.__setitem__("history", s["history"][:1]))),
    Case("data-dir-not-a-path", resume(), 2, ("last.pt, args", "'data_dir'"),
         setup=edit_last(lambda s: s["args"].__setitem__("data_dir", 5))),
    Case("lr-out-of-range", resume(), 2, ("last.pt, args", "argument --lr"),
         setup=edit_last(lambda s: s["args"].__setitem__("lr", -1.0))),
    Case("flow-unknown", resume(), 2, ("last.pt, args", "argument --flow", "invalid choice"),
         setup=edit_last(lambda s: s["args"].__setitem__("flow", "spline"))),
    Case("z-dim-a-bool", resume(), 2, ("last.pt, args", "'z_dim'"),
         setup=edit_last(lambda s: s["args"].__setitem__("z_dim", True))),
    # links planted in the run folder
    Case("checkpoints-folder-a-link", resume(), 2, ("is a symbolic link",),
         setup=lambda c: (shutil.move(c.run / "checkpoints", c.tmp / "elsewhere"),
                          (c.run / "checkpoints").symlink_to(c.tmp / "elsewhere"))),
    Case("last-pt-a-link", resume(), 2, ("is a symbolic link",),
         setup=lambda c: (shutil.move(c.run / "checkpoints" / "last.pt", c.tmp / "last.pt"),
                          (c.run / "checkpoints" / "last.pt").symlink_to(c.tmp / "last.pt"))),
]


@pytest.mark.parametrize("case", params(CHECKPOINT_CASES))
def test_resume_refuses_a_checkpoint_that_contradicts_itself(case, ctx, capsys):
    run_case(case, train_torch.cli, "train_torch.py", ctx, capsys)
    assert (ctx.tmp / "outside.txt").read_text() == "a user's file\n"


def test_a_link_at_the_old_temporary_name_is_never_written_through(ctx, capsys):
    """Before: eval_test.json.tmp -> a file outside made evaluate.py overwrite it. Now the temporary file is
    created fresh (O_EXCL, random name): the outside file is untouched and eval_test.json is a regular file."""
    planted = ctx.run / "eval_test.json.tmp"
    planted.symlink_to(ctx.tmp / "outside.txt")
    evaluate.main(evaluate.parse_args([str(ctx.run), "--iw_samples", "2", "--device", "cpu"]))
    assert (ctx.tmp / "outside.txt").read_text() == "a user's file\n"
    result = ctx.run / "eval_test.json"
    assert result.is_file() and not result.is_symlink() and json.loads(result.read_text())["iw_samples"] == 2
    assert oct(result.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    remove_stale_tmp(ctx.run)  # what a resume does first: the planted link goes, its target stays
    assert not planted.is_symlink() and (ctx.tmp / "outside.txt").read_text() == "a user's file\n"


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


EVALUATE_CASES = [
    Case("destination-a-link", lambda c: [c.run, "--iw_samples", "2", "--device", "cpu"], 2,
         ("refusing to write", "eval_test.json: it is a symbolic link"),
         setup=lambda c: link(c.tmp / "outside.txt")(c.run / "eval_test.json")),
    Case("picture-a-link", lambda c: [c.run, "--iw_samples", "2", "--device", "cpu"], 2,
         ("refusing to write", "interpolations_test.png: it is a symbolic link"),
         setup=lambda c: link(c.tmp / "outside.txt")(c.run / "interpolations_test.png")),
    Case("run-folder-holds-a-folder-link", lambda c: [c.run, "--iw_samples", "2", "--device", "cpu"], 2,
         ("reconstructions_test.png: it is a folder",),
         setup=lambda c: (c.run / "reconstructions_test.png").mkdir()),
]


@pytest.mark.parametrize("case", params(EVALUATE_CASES))
def test_evaluate_refuses_to_write_through_a_link(case, ctx, capsys):
    run_case(case, evaluate.cli, "evaluate.py", ctx, capsys)
    assert (ctx.tmp / "outside.txt").read_text() == "a user's file\n"


FRESH_CASES = [
    Case("run-name-escapes", lambda c: ["--data_dir", c.data, "--log_dir", c.logs, *SMALL, "--run_name", "../escaped"],
         2, ("argument --run_name", "plain folder name"), check=lambda c: not (c.tmp / "escaped").exists()),
    Case("run-name-absolute", lambda c: ["--data_dir", c.data, "--log_dir", c.logs, *SMALL, "--run_name",
                                         str(c.tmp / "abs")], 2, ("argument --run_name",)),
    Case("run-name-dot-dot", lambda c: ["--data_dir", c.data, "--log_dir", c.logs, *SMALL, "--run_name", ".."],
         2, ("argument --run_name",)),
    Case("log-dir-name-too-long", lambda c: ["--data_dir", c.data, "--log_dir", c.tmp / ("x" * 300), *SMALL], 2,
         ("File name too long",)),
]


@pytest.mark.parametrize("case", params(FRESH_CASES))
def test_fresh_run_paths_the_os_refuses(case, ctx, capsys):
    run_case(case, train_torch.cli, "train_torch.py", ctx, capsys)


@pytest.mark.parametrize("flag, says", [("--data_dir", "a loop of symbolic links"),
                                        ("--log_dir", "a loop of symbolic links"),
                                        ("--log_dir", "dangling")])
def test_links_the_os_cannot_follow(flag, says, ctx, capsys):
    """A link loop or a dangling link as --data_dir / --log_dir: one line, status 2, no run folder anywhere.
    (Checked by hand: the contract's snapshot cannot walk a link loop.)"""
    name = "dangling" if says == "dangling" else "loop"
    (ctx.tmp / name).symlink_to(ctx.tmp / ("nowhere" if name == "dangling" else name))
    paths = {"--data_dir": ctx.data, "--log_dir": ctx.logs, flag: ctx.tmp / name}
    with pytest.raises(SystemExit) as info:
        train_torch.cli([*(str(p) for kv in paths.items() for p in kv), *SMALL])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert info.value.code == 2 and len(lines) == 1 and lines[0].startswith("train_torch.py: error: "), lines
    assert says in lines[0] or (says == "dangling" and str(ctx.tmp / name) in lines[0]), lines[0]
    assert sorted(p.name for p in ctx.tmp.iterdir()) == sorted(["run", "outside.txt", name])


def damage(name, text):
    return lambda c: (c.run / name).write_bytes(text if isinstance(text, bytes) else text.encode())


def rewrite_json(name, edit):
    def setup(c):
        record = json.loads((c.run / name).read_text())
        edit(record)
        (c.run / name).write_text(json.dumps(record))
    return setup


FIGURE_CASES = [
    Case("metrics-without-test-bpd", None, 2, ("metrics.json lacks 'test_bpd'",),
         setup=rewrite_json("metrics.json", lambda m: m.pop("test_bpd"))),
    Case("metrics-with-nulls", None, 2, ("metrics.json lacks 'epochs'",),
         setup=rewrite_json("metrics.json", lambda m: m.__setitem__("epochs", None))),
    Case("metrics-of-the-wrong-type", None, 2, ("metrics.json: 'test_bpd' is", "not a number"),
         setup=rewrite_json("metrics.json", lambda m: m.__setitem__("test_bpd", "1.52"))),
    Case("history-not-utf8", None, 2, ("history.jsonl is not UTF-8",), setup=damage("history.jsonl", b"\xff\xfe{")),
    Case("history-bpd-not-a-number", None, 2, ("history.jsonl, line 1: 'val_bpd'",),
         setup=lambda c: (c.run / "history.jsonl").write_text("".join(
             json.dumps({**json.loads(line), "val_bpd": "low"}) + "\n"
             for line in (c.run / "history.jsonl").read_text().splitlines()))),
    Case("partial-eval-json", None, 2, ("eval_test.json lacks 'checkpoint'",),
         setup=damage("eval_test.json", json.dumps({"per_image_iw_bpd": [1.0, 2.0]}))),
    Case("eval-per-class-damaged", None, 2, ("per_class 'Bag'", "lacks 'count'"),
         setup=lambda c: evaluated(c, lambda e: e["per_class"].__setitem__("Bag", {"bpd": 1.0}))),
    Case("corrupt-png", None, 2, ("samples_epoch_002.png is not a readable PNG",),
         setup=damage("samples_epoch_002.png", b"\x89PNG\r\n\x1a\n broken")),
]


def evaluated(c, edit):
    evaluate.main(evaluate.parse_args([str(c.run), "--iw_samples", "2", "--device", "cpu"]))
    rewrite_json("eval_test.json", edit)(c)


@pytest.mark.parametrize("case", params(FIGURE_CASES))
def test_make_figures_on_damaged_run_files(case, ctx, capsys):
    (ctx.tmp / "report.md").write_text("# r\n<!-- results:begin -->\n<!-- results:end -->\n")
    case.argv = lambda c: [c.run, "--out_dir", c.tmp / "figures", "--report", c.tmp / "report.md"]
    run_case(case, make_figures.cli, "make_figures.py", ctx, capsys)


def test_resume_restores_a_history_cut_after_the_checkpoint(ctx):
    """The crash order the OS allows: the checkpoint of epoch 2 is on disk, the history's last line is not.
    The checkpoint carries its records, so the resumed history has every epoch exactly once."""
    history = ctx.run / "history.jsonl"
    original = history.read_text().splitlines()
    history.write_text(original[0] + "\n")  # epoch 2's record lost
    train_torch.main(train_torch.parse_args(["--resume", str(ctx.run), "--epochs", "3"]))
    lines = history.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3] and lines[:2] == original
    assert [r["epoch"] for r in load_checkpoint(ctx.run / "checkpoints" / "last.pt")["history"]] == [1, 2, 3]


def test_an_older_checkpoint_without_history_refuses_a_short_history(ctx, capsys):
    edit_checkpoint(ctx.run / "checkpoints" / "last.pt", lambda s: s.pop("history"))
    (ctx.run / "history.jsonl").write_text((ctx.run / "history.jsonl").read_text().splitlines()[0] + "\n")
    case = Case("short-history", resume(), 2, ("lacks records of epochs 1..2",),
                may_change=("run/args.json", "run/events.out.tfevents.*"))
    run_case(case, train_torch.cli, "train_torch.py", ctx, capsys)


def test_two_processes_on_one_run_folder(ctx, capsys):
    """While one process holds the run (a training or an evaluation), a second resume is refused in one line
    and changes nothing; once the first lets go, the resume runs."""
    with RunDir(ctx.run).locked():
        run_case(Case("in-use", resume(), 2, ("is in use by another process",), may_change=("run/.lock",)),
                 train_torch.cli, "train_torch.py", ctx, capsys)
        with pytest.raises(UserError, match="in use"):
            evaluate.main(evaluate.parse_args([str(ctx.run), "--iw_samples", "2", "--device", "cpu"]))
    assert (ctx.run / ".lock").is_file()  # released, not removed (issue 25 #4: two holders otherwise)
    train_torch.main(train_torch.parse_args(["--resume", str(ctx.run), "--epochs", "3"]))
    assert load_checkpoint(ctx.run / "checkpoints" / "last.pt")["epoch"] == 3


def test_ctrl_c_while_torch_imports_is_one_line():
    """SIGINT in the first second, while torch imports: status 130, one line, no traceback."""
    process = subprocess.Popen([sys.executable, str(PART1 / "train_torch.py"), "--help"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.25)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("torch imported before the signal arrived (a very fast machine)")
    assert process.returncode == 130, err
    assert [line for line in err.splitlines() if line.strip()] == [
        "train_torch.py: stopped by SIGINT while starting; nothing was written"]


def test_a_sweeps_failed_run_is_one_line(tmp_path, capfd):
    """The child's own error is folded into the sweep's one line (status 2, the child's reason in it)."""
    data = generated_data(tmp_path / "data", 40, 10, seed=0)
    label_file = data / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    label_file.write_bytes(label_file.read_bytes()[:-3])
    with pytest.raises(SystemExit) as info:
        sweep.cli([str(tmp_path / "sweep"), "--seeds", "1", "--", "--data_dir", str(data), *SMALL])
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("sweep.py: error: run elbo-k1_none-l0_s1 failed (status 2): train_torch.py: error: ")
    assert "t10k-labels-idx1-ubyte is truncated" in lines[0]
