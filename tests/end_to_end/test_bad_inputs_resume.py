"""Bad inputs of part1/train_torch.py --resume: missing, damaged, foreign or unsafe checkpoints, settings that
contradict the run, a moved data folder, a read-only run folder. Each case resumes a copy of the shared
finished run (conftest) in-process and keeps the contract of cli_contract.py: the resumed run is left exactly
as it was. Fresh runs: test_bad_inputs.py."""
import errno
import json

import pytest
import torch

import train_torch
from cli_contract import Case, edit_checkpoint, fail_writes, params, run_case
from conftest import RunsCode
from dgmkit.runs.checkpoints import load_checkpoint

NOT_OURS = "{run}/checkpoints/last.pt is not a checkpoint of train_torch.py or is corrupt"


def resume_argv(*flags, run=lambda c: c.run):
    return lambda c: ["--resume", run(c), *flags]


def edit_last(edit):
    return lambda c: edit_checkpoint(c.run / "checkpoints" / "last.pt", edit)


def without(name):
    return edit_last(lambda state: state.pop(name))


def set_entry(name, value):
    return edit_last(lambda state: state.__setitem__(name, value))


def without_rng(part):
    return edit_last(lambda state: state["rng"].pop(part))


def run_of(**settings):
    """The run's checkpoint as if trained with other settings (only its args say so; enough for the checks)."""
    return edit_last(lambda state: state["args"].update(settings))


def truncate_last(c):
    path = c.run / "checkpoints" / "last.pt"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def last_runs_code(c):
    torch.save({"model": {}, "args": {"z_dim": 20, "num_filters": 32}, "payload": RunsCode(c.tmp / "pwned")},
               c.run / "checkpoints" / "last.pt")


RESUME_CASES = [
    Case("without-last-pt", resume_argv(), 2, ("no checkpoint at {run}/checkpoints/last.pt",),
         setup=lambda c: (c.run / "checkpoints" / "last.pt").unlink()),
    Case("folder-that-is-not-a-run", resume_argv(run=lambda c: c.tmp / "empty"), 2,
         ("no checkpoint at {tmp}/empty/checkpoints/last.pt",), setup=lambda c: (c.tmp / "empty").mkdir()),
    # damaged, foreign and unsafe checkpoints
    Case("checkpoint-truncated", resume_argv(), 2, ("{run}/checkpoints/last.pt", "truncated or corrupt"),
         setup=truncate_last),
    Case("checkpoint-that-runs-code", resume_argv(), 2, ("refusing to load",), setup=last_runs_code,
         check=lambda c: not (c.tmp / "pwned").exists() or pytest.fail("the checkpoint ran code")),
    Case("checkpoint-without-epoch", resume_argv("--epochs", "3"), 2, (NOT_OURS, "'epoch'"), setup=without("epoch")),
    Case("checkpoint-epoch-not-int", resume_argv("--epochs", "3"), 2, (NOT_OURS, "'epoch'"),
         setup=set_entry("epoch", "2")),
    Case("checkpoint-without-optimizer", resume_argv("--epochs", "3"), 2, (NOT_OURS, "'optimizer'"),
         setup=without("optimizer")),
    Case("checkpoint-without-rng", resume_argv("--epochs", "3"), 2, (NOT_OURS, "'rng'"), setup=without("rng")),
    Case("checkpoint-rng-without-numpy", resume_argv("--epochs", "3"), 2, (NOT_OURS, "numpy"),
         setup=without_rng("numpy")),
    Case("checkpoint-args-not-a-dict", resume_argv("--epochs", "3"), 2, (NOT_OURS, "'args'"),
         setup=set_entry("args", "z_dim=2 num_filters=8")),
    # settings that contradict the run: each names both values
    Case("conflicting-lr", resume_argv("--lr", "0.5"), 2, ("--lr 0.5 differs from the resumed run's 0.001",)),
    Case("typed-default-lr", resume_argv("--lr", "1e-3", "--epochs", "3"), 2,  # typed, so it counts
         ("--lr 0.001 differs from the resumed run's 0.0005",), setup=run_of(lr=5e-4)),
    Case("conflicting-objective", resume_argv("--objective", "iwae"), 2,
         ("--objective iwae differs from the resumed run's elbo",)),
    Case("iwae-run-as-elbo", resume_argv("--objective", "elbo"), 2,
         ("--objective elbo differs from the resumed run's iwae",), setup=run_of(objective="iwae", train_samples=3)),
    Case("fewer-epochs", resume_argv("--epochs", "1"), 2, ("--epochs 1 is fewer than the 2 epochs",)),
    Case("other-z-dim", resume_argv("--z_dim", "7"), 2, ("z_dim=2", "z_dim=7")),
    Case("other-flow", resume_argv("--flow", "planar", "--flow_length", "2"), 2,
         ("flow=none", "flow_length=0", "flow=planar", "flow_length=2")),
    Case("planar-run-as-radial", resume_argv("--flow", "radial"), 2, ("flow=planar", "flow=radial"),
         setup=run_of(flow="planar", flow_length=2)),
    # the surroundings
    Case("data-moved", resume_argv("--epochs", "3", "--data_dir", "{tmp}/moved"), 2, ("FashionMNIST not found in",)),
    Case("folder-not-writable", resume_argv("--epochs", "3"), 2, ("cannot write {run}/", "Permission denied"),
         setup=lambda c: fail_writes(c.mp, errno.EACCES, lambda path: c.run in path.parents)),
]


@pytest.mark.parametrize("case", params(RESUME_CASES))
def test_train_torch_resume_bad_input(case, run_ctx, capsys):
    run_case(case, train_torch.cli, "train_torch.py", run_ctx, capsys)


def test_train_torch_resume_after_torn_history_line(run_ctx, capsys):
    """A kill during the append leaves a torn last line: the resume drops it and ends with 3 clean records."""
    run = run_ctx.run
    with open(run / "history.jsonl", "a") as f:
        f.write('{"epoch": 3, "seconds": 0.4, "train_b')
    try:
        train_torch.cli(["--resume", str(run), "--epochs", "3"])
    except SystemExit as stop:
        assert stop.code == 0, capsys.readouterr().err[-3000:]
    assert not [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    lines = (run / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 3
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3
