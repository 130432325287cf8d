"""sweep.py: grid points and their names, and the SLURM job array script (a sweep's runs end to end, killed and
rerun: tests/end_to_end/test_sweep_runs.py; bad input: tests/end_to_end/test_bad_inputs_runs.py; a point another
process holds, and a rerun with other flags: tests/end_to_end/test_hardening3_sweep.py)."""
import shlex
import subprocess
from argparse import Namespace

from conftest import PART1, REPO_ROOT
from sweep import cli, grid_points, parse_args, point_name

GRID4 = ["--objectives", "elbo", "iwae", "--train_samples", "2", "--flows", "none", "planar", "--flow_lengths", "2"]


def test_grid_points_and_names():
    args = Namespace(family="vae", objectives=["elbo", "iwae"], train_samples=[1, 5], flows=["none", "planar"],
                     flow_lengths=[2, 10], seeds=[42])
    names = [point_name(p) for p in grid_points(args)]
    per_objective = ["k1_none-l0_s42", "k1_planar-l2_s42", "k1_planar-l10_s42",
                     "k5_none-l0_s42", "k5_planar-l2_s42", "k5_planar-l10_s42"]
    assert names == [f"{o}-{rest}" for o in ("elbo", "iwae") for rest in per_objective]
    assert grid_points(args)[1] == {"objective": "elbo", "train_samples": 1, "flow": "planar", "flow_length": 2,
                                    "seed": 42}
    # Defaults: one point; repeated values and flow none's lengths collapse.
    assert [point_name(p) for p in grid_points(parse_args(["d"]))] == ["elbo-k1_none-l0_s42"]
    args = parse_args(["d", "--flows", "none", "radial", "--flow_lengths", "3", "4", "3", "--seeds", "7", "7", "0"])
    assert [point_name(p) for p in grid_points(args)] == [
        "elbo-k1_none-l0_s7", "elbo-k1_none-l0_s0", "elbo-k1_radial-l3_s7", "elbo-k1_radial-l3_s0",
        "elbo-k1_radial-l4_s7", "elbo-k1_radial-l4_s0"]
    assert args.passthrough == [] and parse_args(["d", "--", "--epochs", "3"]).passthrough == ["--epochs", "3"]


def slurm_script(sweep_dir, *flags):
    cli([sweep_dir, *GRID4, "--slurm", *flags, "--", "--epochs", "5", "--data_dir", "my data"])
    assert [p.name for p in sweep_dir.iterdir()] == ["sweep.sbatch"]  # nothing ran
    return (sweep_dir / "sweep.sbatch").read_text()


def test_slurm_script(tmp_path, capsys):
    sweep_dir = tmp_path / "slurm"
    text = slurm_script(sweep_dir, "--partition", "short", "--time", "00:30:00", "--gpus", "2", "--cpus_per_task",
                        "3", "--job_name", "kgrid", "--activate", "module load py; source env/bin/activate")
    assert capsys.readouterr().out.startswith(f"{sweep_dir / 'sweep.sbatch'}: 4 array tasks")
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert directives == ["#SBATCH --array=0-3", "#SBATCH --job-name=kgrid", "#SBATCH --partition=short",
                          "#SBATCH --time=00:30:00", "#SBATCH --gres=gpu:2", "#SBATCH --cpus-per-task=3",
                          f"#SBATCH --output={sweep_dir}/slurm-%A_%a.out"]
    lines = text.splitlines()
    assert all(lines[lines.index(d) - 1].startswith("# ") for d in directives)  # each says what it is
    assert "module load py; source env/bin/activate" in lines and f"cd {REPO_ROOT}" in lines
    assert lines[-1] == 'eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"'
    subprocess.run(["bash", "-n", sweep_dir / "sweep.sbatch"], check=True)
    # bash's own reading of the array: one complete command per point, each that point only.
    array = "\n".join(lines[lines.index("COMMANDS=("):lines.index(")") + 1])
    shown = subprocess.run(["bash", "-c", array + '\nprintf "%s\\0" "${COMMANDS[@]}"'], capture_output=True,
                           text=True, check=True).stdout.split("\0")[:-1]
    assert len(shown) == 4
    for index, command in enumerate(shown):
        assert shlex.split(command) == ["python", str(PART1 / "sweep.py"), str(sweep_dir), "--only", str(index),
                                        "--family", "vae", "--objectives", "elbo", "iwae", "--train_samples", "2",
                                        "--flows", "none", "planar", "--flow_lengths", "2", "--seeds", "42", "--", "--epochs", "5",
                                        "--data_dir", "my data"]
        assert grid_points(parse_args(shlex.split(command)[2:]))[index]["flow"] == ["none", "planar"][index % 2]
    assert "--gres" not in slurm_script(tmp_path / "cpu", "--gpus", "0")
