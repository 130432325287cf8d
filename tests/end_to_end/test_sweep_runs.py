"""sweep.py end to end: a local sweep (a rerun skips everything, as does SLURM's --only task), a sweep of another family
over seeds, and a sweep killed by SIGTERM and rerun equals an uninterrupted one (its grid, names and SLURM script:
tests/test_sweep.py; bad input: test_bad_inputs_runs.py)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import PART1, REPO_ROOT, error_line, generated_data, history_without_time, run_script
from dgmkit.runs.folder import RunDir
from sweep import cli, grid_points, main, parse_args, point_name


# 3 epochs of 17 batches: the kill test stops the second run inside its second or third epoch.
TRAIN = ["--epochs", "3", "--batch_size", "16", "--num_filters", "4", "--z_dim", "2", "--sample_epochs",
         "--final_iw_samples", "2", "--device", "cpu", "--no-progress_bar"]
GRID4 = ["--objectives", "elbo", "iwae", "--train_samples", "2", "--flows", "none", "planar", "--flow_lengths", "2"]
NAMES4 = ["elbo-k2_none-l0_s42", "elbo-k2_planar-l2_s42", "iwae-k2_none-l0_s42", "iwae-k2_planar-l2_s42"]
GRID2 = ["--objectives", "elbo", "iwae", "--train_samples", "2"]  # 2 of GRID4's points (flow none)
NAMES2 = ["elbo-k2_none-l0_s42", "iwae-k2_none-l0_s42"]


def sweep_command(sweep_dir, grid, data_dir):
    return [PART1 / "sweep.py", sweep_dir, *grid, "--", "--data_dir", data_dir, *TRAIN]


def mtimes(folder):
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def full_sweep(tiny_data, tmp_path_factory):
    """The 4-point sweep, run once; its first folder was left by a run killed before its first checkpoint."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "grid"
    (sweep_dir / NAMES4[0] / "checkpoints").mkdir(parents=True)
    (sweep_dir / NAMES4[0] / "args.json").write_text("{}")
    result = run_script(sweep_command(sweep_dir, GRID4, tiny_data), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, result


@pytest.mark.slow
def test_a_sweep_of_another_family_runs_its_script_over_seeds(tmp_path, capsys):
    """--family gan: one point per seed, named gan_s<seed>, trained by train_gan.py; a rerun skips them; the VAE's
    grid flags are refused in one line."""
    data = generated_data(tmp_path / "data", 40, 10, seed=2, folder="MNIST")
    flags = ["--", "--data_dir", str(data), "--epochs", "1", "--latent_dim", "4", "--batch_size", "16",
             "--sample_epochs", "--device", "cpu", "--no-progress_bar"]
    assert [point_name(p, "gan") for p in grid_points(parse_args(["d", "--family", "gan", "--seeds", "3", "1", "3"]))
            ] == ["gan_s3", "gan_s1"]
    assert main(parse_args([str(tmp_path / "sw"), "--family", "gan", "--seeds", "1", "2", *flags])) == ["start"] * 2
    for seed in (1, 2):
        run = RunDir(tmp_path / "sw" / f"gan_s{seed}")
        assert run.is_finished() and run.read_args()["seed"] == seed and run.figure_path("interpolation").is_file()
    assert main(parse_args([str(tmp_path / "sw"), "--family", "gan", "--seeds", "1", "2", *flags])) == ["skip"] * 2
    with pytest.raises(SystemExit) as info:
        cli([str(tmp_path / "sw"), "--family", "gan", "--objectives", "iwae", *flags])
    assert info.value.code == 2 and "sweeps --seeds only" in error_line(capsys)


@pytest.mark.slow
def test_local_sweep_and_rerun(full_sweep, tiny_data, capfd):
    sweep_dir, result = full_sweep
    lines = result.stdout.splitlines()
    assert f"[1/4] {NAMES4[0]}: start (removed its folder: no checkpoint)" in lines
    assert [f"[{i + 1}/4] {name}: start" in result.stdout for i, name in enumerate(NAMES4)] == [True] * 4
    assert "sweep: 4 point(s) finished (4 started, 0 resumed, 0 skipped as finished)" in lines[-1]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == NAMES4
    for name, point in zip(NAMES4, grid_points(parse_args(["d", *GRID4]))):
        assert RunDir(sweep_dir / name).is_finished() and len(RunDir(sweep_dir / name).read_history()) == 3
        args = json.loads((sweep_dir / name / "args.json").read_text())
        assert {key: args[key] for key in point} == point
        assert (args["epochs"], args["num_filters"], args["z_dim"]) == (3, 4, 2)
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert [(p["index"], p["name"], p["status"]) for p in summary["points"]] == \
           [(i, name, "finished") for i, name in enumerate(NAMES4)]
    assert summary["grid"] == {"family": "vae", "objectives": ["elbo", "iwae"], "train_samples": [2],
                               "flows": ["none", "planar"], "flow_lengths": [2], "seeds": [42]}
    assert summary["passthrough"] == ["--data_dir", str(tiny_data), *TRAIN]

    before = mtimes(sweep_dir)
    capfd.readouterr()
    cli(sweep_command(sweep_dir, GRID4, tiny_data)[1:])  # the same command again (in this process: it only skips)
    lines = capfd.readouterr().out.splitlines()
    assert lines[:-1] == [f"[{i + 1}/4] {name}: skip (finished)" for i, name in enumerate(NAMES4)]
    assert "sweep: 4 point(s) finished (0 started, 0 resumed, 4 skipped as finished)" in lines[-1]
    cli([sweep_dir, "--only", "2", *sweep_command(sweep_dir, GRID4, tiny_data)[2:]])  # what SLURM task 2 runs
    assert capfd.readouterr().out.splitlines()[0] == f"[3/4] {NAMES4[2]}: skip (finished)"
    assert mtimes(sweep_dir) == before


@pytest.mark.slow
def test_killed_sweep_reruns_to_the_uninterrupted_result(full_sweep, tiny_data, tmp_path, capfd):
    sweep_dir = tmp_path / "killed"
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    process = subprocess.Popen([sys.executable, *map(str, sweep_command(sweep_dir, GRID2, tiny_data))], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = sweep_dir / NAMES2[1] / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not second.is_file():  # poll: the signal lands within an interval of epoch 1's checkpoint
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "the second run never checkpointed"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    assert err.splitlines()[-1] == f"sweep.py: stopped by SIGTERM during {NAMES2[1]}; rerun the same command to " \
                                   "resume it"
    assert RunDir(sweep_dir / NAMES2[0]).is_finished() and not RunDir(sweep_dir / NAMES2[1]).is_finished()  # really cut short
    assert json.loads((sweep_dir / "sweep.json").read_text())["points"][1]["status"] == "interrupted"

    capfd.readouterr()
    cli(sweep_command(sweep_dir, GRID2, tiny_data)[1:])  # the rerun: the sweep in this process, its run a child
    out = capfd.readouterr().out
    assert f"[1/2] {NAMES2[0]}: skip (finished)" in out and f"[2/2] {NAMES2[1]}: resume" in out
    uninterrupted = full_sweep[0]
    for name in NAMES2:
        assert history_without_time(sweep_dir / name) == history_without_time(uninterrupted / name)
        resumed, reference = RunDir(sweep_dir / name).read_metrics(), RunDir(uninterrupted / name).read_metrics()
        assert resumed["test_bpd"] == reference["test_bpd"] and resumed["test_iw_bpd"] == reference["test_iw_bpd"]
