"""The third adversarial round (issue 25) on sweep.py. Nothing removes a point folder it has not locked: a point
whose folder another process holds (its training, a second sweep's) is refused in one line, exit 2, and left as it
is (cause 2). A sweep's points carry the sweep's flags: a rerun whose flags after -- give an existing run other
settings is refused in one line before anything runs or is written, and a larger --epochs extends finished runs
(cause 3). The holder of a lock is a real second process (forked: it holds RunDir.locked() until released); the
refusals on planted run folders need no training, those on real runs are slow."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest

from cli_contract import snapshot
from conftest import PART1, REPO_ROOT, SMALL, generated_data, history_without_time, wait_for
from dgmkit.engine.session import RESUME_MAY_CHANGE
from dgmkit.errors import UserError
from dgmkit.runs.folder import RunDir
from dgmkit.vae.config import TrainConfig
from sweep import cli, grid_points, main, parse_args, point_name, write_summary

POINT = grid_points(parse_args(["d"]))[0]  # the default grid's one point
NAME = point_name(POINT)  # elbo-k1_none-l0_s42
MAY_CHANGE = ", --".join(RESUME_MAY_CHANGE)  # the VAE has every one


def flags_of(tmp_path, *extra):
    """Flags after -- of a planted sweep (its data folder does not exist: nothing may train)."""
    return ["--data_dir", str(tmp_path / "no_data"), "--epochs", "2", "--num_filters", "4", "--z_dim", "2",
            "--device", "cpu", "--no-progress_bar", *extra]


def planted_sweep(tmp_path, flags, finished=True, checkpoint=True):
    """SWEEP_DIR holding the default point's run folder as a sweep with `flags` after -- left it (args.json, the
    history of its epochs or of epoch 1, checkpoints/last.pt unless not `checkpoint`, metrics.json when `finished`)
    and its sweep.json."""
    sweep_dir = tmp_path / "sweep"
    run = sweep_dir / NAME
    (run / "checkpoints").mkdir(parents=True)
    settings = {**TrainConfig.parse(flags).to_dict(), **POINT}
    (run / "args.json").write_text(json.dumps(settings))
    epochs = range(1, settings["epochs"] + 1 if finished else 2)
    (run / "history.jsonl").write_text("".join(json.dumps({"epoch": epoch}) + "\n" for epoch in epochs))
    if checkpoint:
        (run / "checkpoints" / "last.pt").write_bytes(b"the weights of epoch 1")
    if finished:
        (run / "metrics.json").write_text(json.dumps({"epochs": settings["epochs"], "test_bpd": 2.5}))
    args = parse_args([str(sweep_dir), "--", *flags])
    write_summary(sweep_dir, args, grid_points(args))
    return sweep_dir


def refused(argv, capsys):
    """The one stderr line of a sweep that exits 2 (in this process), and what it printed on stdout."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == 2 and len(lines) == 1, err[-3000:]
    return lines[0], out


def hold(path, locked, release):
    with RunDir(path).locked():
        locked.set()
        release.wait(120)


@contextmanager
def held(path):
    """Another process holds the lock of the run folder `path` for the block; yields the line a second holder gets."""
    fork = multiprocessing.get_context("fork")
    locked, release = fork.Event(), fork.Event()
    holder = fork.Process(target=hold, args=(path, locked, release))
    holder.start()
    try:
        assert locked.wait(60), "the holder never locked the folder"
        with pytest.raises(UserError) as busy, RunDir(path).locked():
            pass
        yield str(busy.value)
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0


def busy_line(name, busy):
    return f"sweep.py: error: cannot run point {name}: {busy}; the sweep stopped, its folder untouched"


# ---- cause 2: nothing removes a folder it has not locked ----------------------------------------------------------
def test_a_point_without_checkpoint_that_another_process_holds_is_refused_not_removed(tmp_path, capsys):
    """The folder of a run in its epoch 1 (no checkpoint yet) was removed and trained a second time."""
    flags = flags_of(tmp_path)
    sweep_dir = planted_sweep(tmp_path, flags, finished=False, checkpoint=False)
    with held(sweep_dir / NAME) as busy:
        before = snapshot(tmp_path)
        line, out = refused([str(sweep_dir), "--", *flags], capsys)
        assert snapshot(tmp_path) == before
    assert line == busy_line(NAME, busy) and "in use by another process" in busy
    assert out == ""  # no point was started


def test_a_checkpointed_point_that_another_process_holds_is_refused_not_resumed(tmp_path, capsys):
    """An interrupted point's folder that a running process holds: refused by the sweep, no second run started."""
    flags = flags_of(tmp_path)
    sweep_dir = planted_sweep(tmp_path, flags, finished=False)
    with held(sweep_dir / NAME) as busy:
        before = snapshot(tmp_path)
        line, out = refused([str(sweep_dir), "--", *flags], capsys)
        assert snapshot(tmp_path) == before
    assert line == busy_line(NAME, busy) and out == ""


@pytest.mark.slow
def test_a_second_sweep_while_the_first_trains_epoch_1_is_refused(tmp_path, capsys):
    """Two sweeps on one folder: the second, started while the first is in epoch 1 (no checkpoint yet), stops in one
    line; the first finishes alone: one history record per epoch, one event file."""
    data = generated_data(tmp_path / "data", 1200, 20, seed=3)  # 150 steps of 8 images: epoch 1 lasts seconds
    flags = ["--data_dir", str(data), "--epochs", "1", "--batch_size", "8", "--num_filters", "4", "--z_dim", "2",
             "--sample_epochs", "--final_iw_samples", "2", "--device", "cpu", "--no-progress_bar"]
    sweep_dir, run = tmp_path / "sweep", tmp_path / "sweep" / NAME
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, str(PART1 / "sweep.py"), str(sweep_dir), "--", *flags], cwd=REPO_ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(first, sweep_dir, f"{NAME}/args.json", timeout=300)  # written once the run holds its folder
        assert not (run / "checkpoints" / "last.pt").exists(), "epoch 1 ended before the second sweep could run"
        line, out = refused([str(sweep_dir), "--", *flags], capsys)
        assert line.startswith(f"sweep.py: error: cannot run point {NAME}: the run folder {run} is in use by another "
                               "process") and line.endswith("; the sweep stopped, its folder untouched")
        assert out == ""
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)  # forwarded to its run
            first.wait(60)
    assert first.returncode == 0, stderr[-3000:]
    assert f"[1/1] {NAME}: start" in stdout.splitlines()
    assert [record["epoch"] for record in history_without_time(run)] == [1]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1 and RunDir(run).is_finished()


# ---- cause 3: a sweep's points carry the sweep's flags ------------------------------------------------------------
def changed_flag_line(run, name, old, new, default=False):
    return (f"sweep.py: error: --{name}: {run} was trained with {old}, the flags after -- give {new}"
            f"{' (the default)' if default else ''}; a sweep's runs keep their settings (a rerun may change only "
            f"--{MAY_CHANGE}): rerun with the flags they ran with, or use a new SWEEP_DIR")


def test_other_flags_on_a_finished_point_are_refused_before_anything(tmp_path, capsys):
    """-- --lr 0.01 on a finished sweep skipped its points (trained with 0.001) and recorded --lr 0.01."""
    sweep_dir = planted_sweep(tmp_path, flags_of(tmp_path))
    before = snapshot(tmp_path)
    line, out = refused([str(sweep_dir), "--", *flags_of(tmp_path, "--lr", "0.01")], capsys)
    assert line == changed_flag_line(sweep_dir / NAME, "lr", 0.001, 0.01) and out == ""
    assert snapshot(tmp_path) == before  # sweep.json too: it keeps the flags the runs have


def test_other_flags_on_an_interrupted_point_are_refused_before_anything(tmp_path, capsys):
    """An interrupted point was resumed under its old settings while sweep.json recorded the new ones."""
    sweep_dir = planted_sweep(tmp_path, flags_of(tmp_path), finished=False)
    before = snapshot(tmp_path)
    line, out = refused([str(sweep_dir), "--", *flags_of(tmp_path, "--z_dim", "3")], capsys)
    assert line == changed_flag_line(sweep_dir / NAME, "z_dim", 2, 3) and out == ""
    assert snapshot(tmp_path) == before


def test_a_flag_left_out_is_a_change_too(tmp_path, capsys):
    """The runs were trained with --lr 0.01; a rerun without it would give new points the default."""
    sweep_dir = planted_sweep(tmp_path, flags_of(tmp_path, "--lr", "0.01"))
    before = snapshot(tmp_path)
    line, _ = refused([str(sweep_dir), "--", *flags_of(tmp_path)], capsys)
    assert line == changed_flag_line(sweep_dir / NAME, "lr", 0.01, 0.001, default=True)
    assert snapshot(tmp_path) == before


def test_fewer_epochs_than_a_finished_point_has_are_refused(tmp_path, capsys):
    """--epochs 1 on a sweep that finished 2 epochs skipped the points: a run cannot be shortened."""
    sweep_dir = planted_sweep(tmp_path, flags_of(tmp_path))
    before = snapshot(tmp_path)
    line, _ = refused([str(sweep_dir), "--", *flags_of(tmp_path), "--epochs", "1"], capsys)
    assert line == (f"sweep.py: error: --epochs 1: {sweep_dir / NAME} finished 2 epochs and cannot be shortened; "
                    "pass --epochs 2 or more, or use a new SWEEP_DIR")
    assert snapshot(tmp_path) == before


@pytest.fixture
def one_epoch_sweep(micro_data, tmp_path):
    """A finished 1-epoch sweep of the default point; returns (SWEEP_DIR, its flags after -- but --epochs)."""
    flags = ["--data_dir", str(micro_data), *SMALL[2:]]
    assert SMALL[:2] == ["--epochs", "2"]
    assert main(parse_args([str(tmp_path / "sweep"), "--", *flags, "--epochs", "1"])) == ["start"]
    return tmp_path / "sweep", flags


@pytest.mark.slow
def test_more_epochs_extend_the_finished_points(one_epoch_sweep, micro_data, tmp_path, capfd):
    """--epochs 2 after a 1-epoch sweep skipped its finished points; now each trains on to epoch 2, as a run of 2."""
    sweep_dir, flags = one_epoch_sweep
    capfd.readouterr()
    assert main(parse_args([str(sweep_dir), "--", *flags, "--epochs", "2"])) == ["resume"]
    assert f"[1/1] {NAME}: resume" in capfd.readouterr().out.splitlines()
    run = RunDir(sweep_dir / NAME)
    assert [r["epoch"] for r in run.read_history()] == [1, 2] and run.read_metrics()["epochs"] == 2
    assert run.read_args()["epochs"] == 2
    assert json.loads((sweep_dir / "sweep.json").read_text())["passthrough"][-2:] == ["--epochs", "2"]
    assert main(parse_args([str(tmp_path / "straight"), "--", *flags, "--epochs", "2"])) == ["start"]
    extended, straight = history_without_time(run.path), history_without_time(tmp_path / "straight" / NAME)
    assert extended == [pytest.approx(record, rel=1e-5) for record in straight]  # the thread count may differ


@pytest.mark.slow
def test_other_flags_on_a_real_finished_sweep_are_refused(one_epoch_sweep, tmp_path, capsys):
    """The same refusal on a run's own args.json (paths recorded relative, auto choices): nothing runs or changes;
    the same flags again skip."""
    sweep_dir, flags = one_epoch_sweep
    before = snapshot(tmp_path)
    line, _ = refused([str(sweep_dir), "--", *flags, "--epochs", "1", "--lr", "0.01"], capsys)
    assert line == changed_flag_line(sweep_dir / NAME, "lr", 0.001, 0.01)
    assert snapshot(tmp_path) == before
    assert main(parse_args([str(sweep_dir), "--", *flags, "--epochs", "1"])) == ["skip"]
