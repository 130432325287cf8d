"""report/make_figures.py, the CLI: what it refuses before any section runs (one line, exit status 2, nothing
written), what a signal half-way says (the files written before it), and `make report`, which takes the committed
runs the report names unless told otherwise. The sections: test_results_2021.py, test_study.py,
test_vae_gan_realnvp.py; bad run folders: tests/end_to_end/test_bad_inputs_runs.py."""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

import make_figures
from conftest import REPO_ROOT

from .test_results_2021 import REPORT_TEXT, fake_run, metrics_of


@pytest.mark.parametrize("argv, message", [
    ([], "give a RUN_DIR, a --study SWEEP_DIR, --models_2019 DIR --compare DIR DIR, or several"),
    (["--models_2019", "models"], "--models_2019 and --compare go together (the section holds both)"),
    (["run", "--compare", "flows", "vaes"], "--models_2019 and --compare go together (the section holds both)"),
], ids=["no-input", "models_2019-without-compare", "compare-without-models_2019"])
def test_refused_before_any_section(argv, message, tmp_path, capsys):
    report = tmp_path / "report.md"
    report.write_text("<!-- results:begin -->\n<!-- results:end -->\n")
    with pytest.raises(SystemExit) as info:
        make_figures.cli([*argv, "--out_dir", str(tmp_path / "out"), "--report", str(report)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == f"make_figures.py: error: {message}"
    assert not (tmp_path / "out").exists() and report.read_text() == "<!-- results:begin -->\n<!-- results:end -->\n"


def stamp(path):
    """What changes when a file is rewritten (atomically: a new inode) or touched; None when it is absent."""
    return (path.stat().st_ino, path.stat().st_mtime_ns) if path.exists() else None


@pytest.mark.slow  # a real process, its imports and a real signal
@pytest.mark.parametrize("signum, name, status", [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "SIGINT", 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_half_way_lists_what_was_written(tmp_path, signum, name, status):
    """Stopped right after it rewrote bpd_curves.png (while it draws a large samples.png), make_figures.py says
    which files it wrote, and that the report was not updated, in one line; exit status 143 or 130."""
    run_dir = fake_run(tmp_path, "2026-01-01_00-00-00_z20", 20, metrics_of(1.2, 1.1), sample_epochs=range(16))
    out, report = tmp_path / "figures", tmp_path / "report.md"
    report.write_text(REPORT_TEXT)
    out.mkdir()
    for name_ in ("bpd_curves.png", "samples.png", "results.md"):
        (out / name_).write_bytes(b"an older run's figure")
        os.utime(out / name_, ns=(10**18, 10**18))
    before = {p.name: stamp(p) for p in out.iterdir()}
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, REPO_ROOT / "report" / "make_figures.py", run_dir, "--out_dir", out,
                                "--report", report], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while stamp(out / "bpd_curves.png") == before["bpd_curves.png"] and process.poll() is None:
        assert time.monotonic() < deadline, "make_figures.py did not rewrite bpd_curves.png in time"
        time.sleep(0.002)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    changed = [out / p.name for p in sorted(out.iterdir(), key=lambda p: p.stat().st_mtime_ns)
               if stamp(p) != before.get(p.name)]
    assert changed[0] == out / "bpd_curves.png" and out / "results.md" not in changed
    assert stderr == (f"make_figures.py: stopped by {name}; written before the stop: {', '.join(map(str, changed))}; "
                      f"the report {report} was not updated\n")
    assert report.read_text() == REPORT_TEXT and stdout == ""
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def make_report_command(folder, *variables):
    """The make_figures.py command line of `make -n report` (with VARIABLES such as RUN=...) run in `folder`,
    which holds a copy of the Makefile (and whatever run folders a test put there)."""
    shutil.copy(REPO_ROOT / "Makefile", folder / "Makefile")
    (folder / "requirements.txt").write_text("")
    (folder / ".venv").mkdir(exist_ok=True)
    (folder / ".venv" / "installed").write_text("")  # newer than requirements.txt: nothing to install
    result = subprocess.run(["make", "-n", "-s", "report", *variables], cwd=folder, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if "make_figures.py" in line]
    return result, shlex.split(lines[0])[2:] if lines else None


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_report_takes_the_runs_the_report_names_not_the_newest(tmp_path):
    """A newer run of any data in part1/VAE_logs/ (named <date>_z20 like every run) is not taken by a plain
    `make report`: it regenerates the report from the committed runs its results block names (issue 25, cause 22)."""
    for stem in ("z20", "z2"):
        (tmp_path / "part1" / "VAE_logs" / f"2099-01-01_00-00-00_{stem}").mkdir(parents=True)
    result, argv = make_report_command(tmp_path)
    assert result.returncode == 0, result.stderr
    report = (REPO_ROOT / "report" / "report.md").read_text()
    named = re.search(r"<!-- results:begin -->\n<!-- generated by report/make_figures.py from `([^`]+)`, `([^`]+)`;",
                      report).groups()
    assert argv == [f"report/runs/{name}" for name in named]
    assert all((REPO_ROOT / path / "metrics.json").is_file() for path in argv)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_report_takes_a_users_runs_only_when_named(tmp_path):
    assert make_report_command(tmp_path, "RUN=mine_z20")[1] == ["mine_z20"]  # not the committed z2 run beside it
    assert make_report_command(tmp_path, "RUN=mine_z20", "RUN_Z2=mine_z2")[1] == ["mine_z20", "mine_z2"]
    result, argv = make_report_command(tmp_path, "RUN_Z2=mine_z2")
    assert result.returncode != 0 and argv is None and "RUN_Z2 needs RUN" in result.stderr


def test_the_committed_runs_regenerate_the_committed_results(tmp_path, capsys):
    """`make report`'s default command reproduces report.md and figures/results.md as committed."""
    _, argv = make_report_command(tmp_path)
    committed = REPO_ROOT / "report"
    report = tmp_path / "report.md"
    shutil.copy(committed / "report.md", report)
    make_figures.main(make_figures.parse_args([str(REPO_ROOT / path) for path in argv] + [
        "--out_dir", str(tmp_path / "figures"), "--report", str(report)]))
    assert report.read_text() == (committed / "report.md").read_text()
    assert (tmp_path / "figures" / "results.md").read_text() == (committed / "figures" / "results.md").read_text()
    assert "removed" not in capsys.readouterr().err
