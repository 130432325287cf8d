"""Bad inputs and interruptions against the four entry points, one table of cases per script.

The contract (README, "exit status"): every bad input or interruption of part1/train_torch.py,
part1/evaluate.py, part1/benchmark.py and report/make_figures.py ends with the documented exit status
(2 bad input, 1 NaN/Inf loss, 130 SIGINT, 143 SIGTERM), exactly one non-empty line on stderr (no
traceback, no argparse usage block) that says what is wrong, and loses nothing written before: every
file that existed is unchanged byte for byte, no *.tmp is left, and no stray file or folder appears
(unless a case names what may change, e.g. the fresh run folder of a run that failed in epoch 2).

Each case runs the script's CLI in-process (pytest.raises(SystemExit)); only the signal cases start a
real process. The cases that need a trained run use copies of one small finished run built per module.
"""
import errno
import fnmatch
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable
from urllib.error import URLError

import pytest
import torch
import torchvision.datasets.mnist

import benchmark
import checkpoints
import evaluate
import train_torch
from checkpoints import load_checkpoint
from cli_common import Terminated, run_cli
from conftest import PART1, REPO_ROOT, generated_data, only_run_dir

sys.path.insert(0, str(REPO_ROOT / "report"))
import make_figures  # noqa: E402

SMALL = ["--epochs", "2", "--batch_size", "64", "--num_filters", "8", "--z_dim", "2", "--sample_epochs",
         "--final_iw_samples", "0", "--device", "cpu", "--no-progress_bar"]
# For the signal cases (on the 300-image tiny_data): 17 steps per epoch, so that a signal sent within
# milliseconds of a file appearing lands in the same epoch, and enough epochs that the run is still going.
SLOW = ["--epochs", "6", "--batch_size", "16", "--num_filters", "8", "--z_dim", "2", "--sample_epochs",
        "--final_iw_samples", "0", "--device", "cpu", "--num_workers", "0", "--no-progress_bar"]
REPORT_TEXT = "# Report\n\n<!-- results:begin -->\nold table\n<!-- results:end -->\n\nText after.\n"
NO_CUDA = "needs a machine without CUDA"


# ---- helpers ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def micro_data(tmp_path_factory):
    """80 training images (72 train / 8 validation: 2 steps per epoch) and 20 test images: cheap epochs."""
    return generated_data(tmp_path_factory.mktemp("micro_data"), 80, 20, seed=5)


@pytest.fixture(scope="module")
def finished_run(micro_data, tmp_path_factory):
    """A finished 2-epoch z_dim 2 run (history, checkpoints, metrics.json, samples, manifold); cases copy it."""
    logs = tmp_path_factory.mktemp("finished")
    train_torch.main(train_torch.parse_args(["--data_dir", str(micro_data), "--log_dir", str(logs), *SMALL]))
    return only_run_dir(logs)


def snapshot(root):
    """Every file (its bytes) and folder (None) under root, by relative path."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in Path(root).rglob("*")}


def changed(before, after, may_change=()):
    """The paths that appeared, disappeared or changed, leaving out those matching a may_change pattern."""
    return sorted(name for name in before.keys() | after.keys()
                  if before.get(name, "absent") != after.get(name, "absent")
                  and not any(fnmatch.fnmatch(name, pattern) for pattern in may_change))


def edit_checkpoint(path, edit):
    """Rewrite a checkpoint with edit(state) applied (a damaged or foreign checkpoint)."""
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def fail_writes(monkeypatch, error_number, when):
    """Make the atomic writes' os.replace fail with error_number for targets where when(path) is true."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if when(Path(dst)):
            raise OSError(error_number, os.strerror(error_number))
        return real(src, dst, *args, **kwargs)
    monkeypatch.setattr(checkpoints.os, "replace", replace)


def offline(monkeypatch):
    """torchvision's download fails as it does without network (after creating FashionMNIST/raw)."""
    def no_network(url, *args, **kwargs):
        raise URLError("no network (test)")
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", no_network)


@dataclass
class Case:
    """One bad input: the command line, what to prepare first, the expected status and message."""
    id: str
    argv: Callable  # ctx -> the arguments ("{tmp}", "{run}", ... in a string are filled from ctx)
    status: int
    says: tuple  # substrings of the one stderr line; "{tmp}", "{run}", ... are filled from ctx
    setup: Callable = None  # ctx -> None: damage a file, monkeypatch, ...
    may_change: tuple = ()  # glob patterns (relative to tmp) of paths that may appear or change
    check: Callable = None  # ctx -> None: the no-loss condition beyond "nothing else changed"
    never_says: tuple = ()
    needs_no_cuda: bool = False


def run_case(case, main_cli, prog, ctx, capsys):
    """Run one case through main_cli and check the common contract; returns the error line."""
    if case.needs_no_cuda and torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    if case.setup:
        case.setup(ctx)
    names = {k: v for k, v in vars(ctx).items() if isinstance(v, (str, Path))}
    argv = [a.format(**names) if isinstance(a, str) else str(a) for a in case.argv(ctx)]
    before = snapshot(ctx.tmp)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main_cli(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == case.status, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    line = ctx.line = lines[0]
    assert line.startswith(f"{prog}: "), line
    for text in case.says:
        assert text.format(**names) in line, (text.format(**names), line)
    for text in case.never_says:
        assert text not in line, line
    assert not changed(before, snapshot(ctx.tmp), case.may_change)
    assert not list(Path(ctx.tmp).rglob("*.tmp"))
    if case.check:
        case.check(ctx)
    return line


def context(tmp_path, monkeypatch, **extra):
    return SimpleNamespace(tmp=tmp_path, mp=monkeypatch, logs=tmp_path / "logs", **extra)


def params(cases):
    return [pytest.param(case, id=case.id) for case in cases]


# ---- train_torch.py --------------------------------------------------------------------------------

def train_argv(*flags):
    """A fresh run on the tiny data into ctx.logs, with extra flags."""
    return lambda c: ["--data_dir", c.data, "--log_dir", c.logs, *SMALL, *flags]


def resume_argv(*flags):
    return lambda c: ["--resume", c.run, *flags]


def without(name):
    return lambda c: edit_checkpoint(c.run / "checkpoints" / "last.pt", lambda state: state.pop(name))


def set_entry(name, value):
    return lambda c: edit_checkpoint(c.run / "checkpoints" / "last.pt", lambda state: state.__setitem__(name, value))


def without_rng(part):
    return lambda c: edit_checkpoint(c.run / "checkpoints" / "last.pt", lambda state: state["rng"].pop(part))


def nan_from_the_first_step(c):
    forward = train_torch.VAE.forward

    def poisoned(self, imgs):
        L_rec, L_reg, bpd = forward(self, imgs)
        return (L_rec * math.nan, L_reg, bpd * math.nan) if self.training else (L_rec, L_reg, bpd)
    c.mp.setattr(train_torch.VAE, "forward", poisoned)


def disk_full_in_replace_after_epoch_1(c):
    """Epoch 1 writes best.pt and last.pt; the next checkpoint's rename fails with ENOSPC."""
    seen = []
    fail_writes(c.mp, errno.ENOSPC, lambda path: path.suffix == ".pt" and (seen.append(path) or len(seen) > 2))


def disk_full_in_torch_save_after_epoch_1(c):
    """The third checkpoint (epoch 2's first) runs out of space half-way through torch.save."""
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *args, **kwargs)
    c.mp.setattr(checkpoints.torch, "save", save)


def checkpoints_hold_epoch_1(c):
    run_dir = only_run_dir(c.logs)
    assert f"cannot write {run_dir / 'checkpoints'}/" in c.line  # names the file
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(run_dir / "checkpoints" / name)["epoch"] == 1, name
    assert not (run_dir / "metrics.json").exists()


def nothing_saved_from_a_diverged_model(c):
    run_dir = only_run_dir(c.logs)
    assert not list((run_dir / "checkpoints").iterdir()) and not (run_dir / "metrics.json").exists()


NOT_OURS = "{run}/checkpoints/last.pt is not a checkpoint of train_torch.py or is corrupt"

TRAIN_CASES = [
    # argparse: refused before anything is read or written (no --log_dir created)
    Case("seed-negative", train_argv("--seed", "-1"), 2, ("argument --seed", "between 0 and 4294967295")),
    Case("seed-above-2**32-1", train_argv("--seed", "4294967296"), 2, ("argument --seed", "4294967296")),
    Case("lr-infinite", train_argv("--lr", "inf"), 2, ("argument --lr", "finite number > 0")),
    Case("lr-negative", train_argv("--lr", "-0.1"), 2, ("argument --lr",)),
    Case("batch-size-fraction", train_argv("--batch_size", "1.5"), 2, ("argument --batch_size", "integer")),
    Case("epochs-text", train_argv("--epochs", "ten"), 2, ("argument --epochs", "integer")),
    Case("flow-unknown", train_argv("--flow", "maf"), 2, ("argument --flow", "maf")),
    Case("objective-unknown", train_argv("--objective", "vlb"), 2, ("argument --objective", "vlb")),
    Case("precision-unknown", train_argv("--precision", "fp16"), 2, ("argument --precision", "fp16")),
    Case("compile-unknown", train_argv("--compile", "maybe"), 2, ("argument --compile", "maybe")),
    # checked before a run folder is made
    Case("z-dim-does-not-fit", train_argv("--z_dim", "1000000000"), 2, ("does not fit", "--z_dim")),
    Case("num-filters-does-not-fit", train_argv("--num_filters", "10000000"), 2, ("does not fit", "--num_filters")),
    Case("device-cuda-without-gpu", train_argv("--device", "cuda"), 2, ("no CUDA device",), needs_no_cuda=True),
    Case("data-dir-absent", lambda c: ["--data_dir", c.tmp / "nowhere", "--log_dir", c.logs, *SMALL], 2,
         ("FashionMNIST not found in {tmp}/nowhere/FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
         setup=lambda c: offline(c.mp)),
    Case("data-dir-empty", lambda c: ["--data_dir", c.tmp / "empty", "--log_dir", c.logs, *SMALL], 2,
         ("FashionMNIST not found in {tmp}/empty/FashionMNIST/raw",),
         setup=lambda c: (offline(c.mp), (c.tmp / "empty").mkdir())),
    Case("run-name-taken", lambda c: ["--data_dir", c.data, "--log_dir", c.tmp, "--run_name", "run", *SMALL], 2,
         ("already holds a run named run",)),
    # --resume: the resumed run is left exactly as it was
    Case("resume-without-last-pt", resume_argv(), 2, ("no checkpoint at {run}/checkpoints/last.pt",),
         setup=lambda c: (c.run / "checkpoints" / "last.pt").unlink()),
    Case("resume-checkpoint-without-epoch", resume_argv("--epochs", "3"), 2, (NOT_OURS, "'epoch'"),
         setup=without("epoch")),
    Case("resume-checkpoint-epoch-not-int", resume_argv("--epochs", "3"), 2, (NOT_OURS, "'epoch'"),
         setup=set_entry("epoch", "2")),
    Case("resume-checkpoint-without-optimizer", resume_argv("--epochs", "3"), 2, (NOT_OURS, "'optimizer'"),
         setup=without("optimizer")),
    Case("resume-checkpoint-without-rng", resume_argv("--epochs", "3"), 2, (NOT_OURS, "'rng'"),
         setup=without("rng")),
    Case("resume-checkpoint-rng-without-numpy", resume_argv("--epochs", "3"), 2, (NOT_OURS, "numpy"),
         setup=without_rng("numpy")),
    Case("resume-checkpoint-args-not-a-dict", resume_argv("--epochs", "3"), 2, (NOT_OURS, "'args'"),
         setup=set_entry("args", "z_dim=2 num_filters=8")),
    Case("resume-conflicting-lr", resume_argv("--lr", "0.5"), 2, ("--lr 0.5 differs from the resumed run's 0.001",)),
    Case("resume-conflicting-objective", resume_argv("--objective", "iwae"), 2,
         ("--objective iwae differs from the resumed run's elbo",)),
    Case("resume-fewer-epochs", resume_argv("--epochs", "1"), 2, ("--epochs 1 is fewer than the 2 epochs",)),
    Case("resume-other-flow", resume_argv("--flow", "planar", "--flow_length", "2"), 2,
         ("flow=none", "flow_length=0", "flow=planar", "flow_length=2")),
    Case("resume-data-moved", resume_argv("--epochs", "3", "--data_dir", "{tmp}/moved"), 2,
         ("FashionMNIST not found in",)),
    Case("resume-folder-not-writable", resume_argv("--epochs", "3"), 2, ("cannot write {run}/", "Permission denied"),
         setup=lambda c: fail_writes(c.mp, errno.EACCES, lambda path: c.run in path.parents)),
    # failures inside training: what was saved before stays loadable
    Case("disk-full-renaming-epoch-2-checkpoint", train_argv(), 2, ("No space left on device",),
         setup=disk_full_in_replace_after_epoch_1, may_change=("logs", "logs/*"), check=checkpoints_hold_epoch_1),
    Case("disk-full-writing-epoch-2-checkpoint", train_argv(), 2, ("No space left on device",),
         setup=disk_full_in_torch_save_after_epoch_1, may_change=("logs", "logs/*"), check=checkpoints_hold_epoch_1),
    Case("nan-loss-in-epoch-1", train_argv(), 1, ("non-finite loss in epoch 1", "no epoch finished"),
         never_says=("holds the last finite epoch",), setup=nan_from_the_first_step, may_change=("logs", "logs/*"),
         check=nothing_saved_from_a_diverged_model),
]


@pytest.fixture
def train_ctx(finished_run, micro_data, tmp_path, monkeypatch):
    shutil.copytree(finished_run, tmp_path / "run")
    return context(tmp_path, monkeypatch, run=tmp_path / "run", data=micro_data)


@pytest.mark.parametrize("case", params(TRAIN_CASES))
def test_train_torch_bad_input(case, train_ctx, capsys):
    run_case(case, train_torch.cli, "train_torch.py", train_ctx, capsys)


def test_train_torch_resume_after_torn_history_line(train_ctx, capsys):
    """A kill during the append leaves a torn last line: the resume drops it and ends with 3 clean records."""
    run = train_ctx.run
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


def test_train_torch_stores_a_relative_data_dir_absolute(micro_data, tmp_path, monkeypatch):
    """A run started elsewhere with --data_dir data_rel records the folder it read, so a resume finds it."""
    shutil.copytree(micro_data, tmp_path / "data_rel")
    monkeypatch.chdir(tmp_path)
    train_torch.cli(["--data_dir", "data_rel", "--log_dir", "logs", *SMALL, "--epochs", "1"])
    run_dir = only_run_dir(tmp_path / "logs")
    expected = str((tmp_path / "data_rel").resolve())
    assert json.loads((run_dir / "args.json").read_text())["data_dir"] == expected
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["args"]["data_dir"] == expected


def start_slow_run(data_dir, log_dir, cwd):
    """train_torch.py as a user starts it (no PYTHONWARNINGS: any warning would break the one-line stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the machine's cores are shared with the in-process cases
    return subprocess.Popen([sys.executable, str(PART1 / "train_torch.py"), "--data_dir", str(data_dir),
                             "--log_dir", str(log_dir), *SLOW], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(process, log_dir, pattern, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended early: {process.communicate()[1][-2000:]}")
        found = list(Path(log_dir).glob(pattern))
        if found:
            return found[0]
        time.sleep(0.002)
    process.kill()
    pytest.fail(f"no {pattern} within {timeout} s")


@pytest.mark.slow
def test_train_torch_sigint_before_the_first_epoch(tiny_data, tmp_path):
    process = start_slow_run(tiny_data, tmp_path / "logs", REPO_ROOT)
    run_dir = wait_for(process, tmp_path / "logs", "*/args.json").parent
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 130 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("train_torch.py: ") and "SIGINT" in lines[0]
    assert "nothing to resume" in lines[0] and str(run_dir) in lines[0], lines[0]
    assert not (run_dir / "checkpoints" / "last.pt").exists() and not list(run_dir.rglob("*.tmp"))


@pytest.mark.slow
def test_train_torch_sigterm_mid_run_gives_a_working_resume_command(tiny_data, tmp_path):
    """Started from part1/: the message's `python <script> --resume <run>` works from there."""
    process = start_slow_run(tiny_data, tmp_path / "logs", PART1)
    run_dir = wait_for(process, tmp_path / "logs", "*/checkpoints/last.pt").parent.parent
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 143 and len(lines) == 1, err[-3000:]
    line = lines[0]
    assert line.startswith("train_torch.py: ") and "SIGTERM" in line and f"--resume {run_dir}" in line, line
    script = line.split("python ", 1)[1].split(" --resume")[0]
    assert script.endswith("train_torch.py") and (PART1 / script).is_file(), line
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert 1 <= last["epoch"] < 6 and f"holds epoch {last['epoch']}" in line
    history = (run_dir / "history.jsonl").read_text().splitlines()
    assert len(history) >= last["epoch"] and not list(run_dir.rglob("*.tmp"))


# ---- evaluate.py -----------------------------------------------------------------------------------

class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def eval_argv(*flags, target=lambda c: c.run):
    return lambda c: [target(c), "--device", "cpu", "--iw_samples", "2", *flags]


def save_to(name, make):
    return lambda c: torch.save(make(c), c.tmp / name)


def other_z_dim(c):
    state = torch.load(c.run / "checkpoints" / "best.pt", weights_only=True)
    state["args"]["z_dim"] = 3
    return state


def interrupt_evaluation(stop):
    def setup(c):
        def raise_stop(*args, **kwargs):
            raise stop()
        c.mp.setattr(evaluate, "evaluate_loader", raise_stop)
    return setup


def run_folder_not_writable(c):
    real = os.access
    c.mp.setattr(evaluate.os, "access", lambda path, mode, *a, **k: False if Path(path) == c.run
                 else real(path, mode, *a, **k))


def old_eval_and_full_disk(c):
    (c.run / "eval_test.json").write_text('{"iw_bpd": 1.5}\n')
    fail_writes(c.mp, errno.ENOSPC, lambda path: c.run in path.parents)


EVAL_CASES = [
    Case("missing-checkpoint", eval_argv(target=lambda c: c.tmp / "no_such_run"), 2,
         ("checkpoint not found: {tmp}/no_such_run",)),
    Case("run-folder-without-best-pt", eval_argv(), 2, ("checkpoint not found: {run}/checkpoints/best.pt",),
         setup=lambda c: (c.run / "checkpoints" / "best.pt").unlink()),
    Case("truncated-checkpoint", eval_argv(target=lambda c: c.tmp / "cut.pt"), 2,
         ("{tmp}/cut.pt is truncated or corrupt",),
         setup=lambda c: (c.tmp / "cut.pt").write_bytes((c.run / "checkpoints" / "best.pt").read_bytes()[:3000])),
    Case("checkpoint-not-ours", eval_argv(target=lambda c: c.tmp / "weights.pt"), 2,
         ("{tmp}/weights.pt is not a checkpoint of train_torch.py",),
         setup=save_to("weights.pt", lambda c: {"weight": torch.zeros(2)})),
    Case("checkpoint-that-runs-code", eval_argv(target=lambda c: c.tmp / "evil.pt"), 2, ("refusing to load",),
         setup=save_to("evil.pt", lambda c: {"model": {}, "args": {"z_dim": 2, "num_filters": 8},
                                             "x": RunsCode(c.tmp / "pwned")}),
         check=lambda c: not (c.tmp / "pwned").exists() or pytest.fail("the checkpoint ran code")),
    Case("checkpoint-args-do-not-match-weights", eval_argv(target=lambda c: c.tmp / "other.pt"), 2,
         ("{tmp}/other.pt does not match the VAE",), setup=save_to("other.pt", other_z_dim)),
    Case("iw-samples-zero", eval_argv("--iw_samples", "0"), 2, ("argument --iw_samples", "at least 1")),
    Case("seed-negative", eval_argv("--seed", "-1"), 2, ("argument --seed",)),
    Case("split-dev", eval_argv("--split", "dev"), 2, ("argument --split", "dev")),
    Case("device-tpu", eval_argv("--device", "tpu"), 2, ("argument --device", "tpu")),
    Case("device-cuda-without-gpu", eval_argv("--device", "cuda"), 2, ("no CUDA device",), needs_no_cuda=True),
    Case("data-dir-missing", lambda c: [c.run, "--device", "cpu", "--data_dir", c.tmp / "nodata"], 2,
         ("FashionMNIST not found in {tmp}/nodata/FashionMNIST/raw",)),
    Case("sigint-during-evaluation", eval_argv(), 130, ("SIGINT", "eval_test.json was not (re)written"),
         setup=interrupt_evaluation(KeyboardInterrupt),
         check=lambda c: not (c.run / "eval_test.json").exists() or pytest.fail("eval_test.json written")),
    Case("sigterm-during-evaluation", eval_argv("--split", "val"), 143, ("SIGTERM", "eval_val.json"),
         setup=interrupt_evaluation(Terminated)),
    Case("run-folder-not-writable", eval_argv(), 2, ("cannot write the results into {run}",),
         setup=run_folder_not_writable, never_says=("Exception in thread",)),
    Case("disk-full-writing-results", eval_argv(), 2, ("cannot write {run}/", "No space left on device"),
         setup=old_eval_and_full_disk, may_change=("run/events.out.tfevents.*",)),
]


@pytest.fixture
def eval_ctx(finished_run, tmp_path, monkeypatch):
    shutil.copytree(finished_run, tmp_path / "run")
    return context(tmp_path, monkeypatch, run=tmp_path / "run")


@pytest.mark.parametrize("case", params(EVAL_CASES))
def test_evaluate_bad_input(case, eval_ctx, capsys):
    line = run_case(case, evaluate.cli, "evaluate.py", eval_ctx, capsys)
    assert "Exception in thread" not in line and "Traceback" not in line


# ---- benchmark.py ----------------------------------------------------------------------------------

def benchmark_cli(argv):
    """python part1/benchmark.py ARGV, in-process (its __main__ block)."""
    cli = getattr(benchmark, "cli", None)
    if cli is not None:
        return cli(argv)
    return run_cli("benchmark.py", benchmark.main, benchmark.parse_benchmark_args(argv))


def bench_argv(*flags):
    return lambda c: ["--device", "cpu", "--num_images", "100", "--out", c.tmp / "bench.json", *flags]


def refuse_to_measure(monkeypatch):
    """Bad input must be refused before any measurement (or synthetic data) starts."""
    def measuring(*args, **kwargs):
        raise AssertionError("benchmark.py started working before rejecting its input")
    for name in ("write_synthetic_idx", "bench_baseline", "ProjectTrainer", "full_epoch"):
        monkeypatch.setattr(benchmark, name, measuring)


BENCH_CASES = [
    Case("steps-zero", bench_argv("--steps", "0"), 2, ("argument --steps", "at least 1")),
    Case("repeats-zero", bench_argv("--repeats", "0"), 2, ("argument --repeats", "at least 1")),
    Case("batch-size-zero", bench_argv("--batch_size", "0"), 2, ("argument --batch_size", "at least 1")),
    Case("num-images-text", bench_argv("--num_images", "x"), 2, ("argument --num_images", "'x'")),
    Case("warmup-negative", bench_argv("--warmup", "-1"), 2, ("argument --warmup",)),
    Case("device-tpu", bench_argv("--device", "tpu"), 2, ("argument --device", "tpu")),
    Case("device-cuda-without-gpu", bench_argv("--device", "cuda", "--out", "{tmp}/new/bench.json"), 2,
         ("no CUDA device",), needs_no_cuda=True),
    Case("out-under-a-file", bench_argv("--out", "{tmp}/a_file/bench.json"), 2,
         ("cannot write --out {tmp}/a_file/bench.json",), setup=lambda c: (c.tmp / "a_file").write_text("keep me\n")),
    Case("out-is-a-folder", bench_argv("--out", "{tmp}/results"), 2, ("cannot write --out {tmp}/results", "folder"),
         setup=lambda c: (c.tmp / "results").mkdir()),
    Case("data-dir-missing", bench_argv("--data_dir", "{tmp}/nodata", "--out", "{tmp}/results/bench.json"), 2,
         ("FashionMNIST not found in {tmp}/nodata/FashionMNIST/raw",)),
]


@pytest.mark.parametrize("case", params(BENCH_CASES))
def test_benchmark_bad_input(case, tmp_path, monkeypatch, capsys):
    refuse_to_measure(monkeypatch)
    run_case(case, benchmark_cli, "benchmark.py", context(tmp_path, monkeypatch), capsys)
    assert not (tmp_path / "bench.json").exists()


# ---- make_figures.py -------------------------------------------------------------------------------

def figures_argv(*runs, report=None, out=None):
    """RUN_DIR [RUN_DIR_Z2] --out_dir OUT --report REPORT; runs are ctx -> path (default: the run copy)."""
    return lambda c: [*(run(c) for run in runs or (lambda c: c.run,)),
                      "--out_dir", out(c) if out else c.out, "--report", report(c) if report else c.report]


def corrupt_history_middle_line(c):
    lines = (c.run / "history.jsonl").read_text().splitlines()
    (c.run / "history.jsonl").write_text("\n".join([lines[0], '{"epoch": 2, "val_b', *lines[1:]]) + "\n")


def failing_report_write(c):
    fail_writes(c.mp, errno.EACCES, lambda path: path == c.report)


FIGURE_CASES = [
    Case("missing-run-folder", figures_argv(lambda c: c.tmp / "no_such_run"), 2,
         ("{tmp}/no_such_run", "does not exist")),
    Case("run-folder-is-a-file", figures_argv(lambda c: c.run / "args.json"), 2, ("{run}/args.json",)),
    Case("run-without-history", figures_argv(), 2, ("{run}/history.jsonl is missing or empty",),
         setup=lambda c: (c.run / "history.jsonl").unlink()),
    Case("unfinished-run", figures_argv(), 2, ("{run} has no metrics.json", "unfinished"),
         setup=lambda c: (c.run / "metrics.json").unlink()),
    Case("unfinished-second-run", figures_argv(lambda c: c.run, lambda c: c.run2), 2,
         ("{run2} has no metrics.json", "unfinished"),
         setup=lambda c: (shutil.copytree(c.run, c.run2), (c.run2 / "metrics.json").unlink())),
    Case("history-corrupt-middle-line", figures_argv(), 2, ("{run}/history.jsonl, line 2, is not an epoch record",),
         setup=corrupt_history_middle_line),
    Case("args-json-corrupt", figures_argv(), 2, ("{run}/args.json is not valid JSON",),
         setup=lambda c: (c.run / "args.json").write_text('{"z_dim": 2,')),
    Case("metrics-json-corrupt", figures_argv(), 2, ("{run}/metrics.json is not valid JSON",),
         setup=lambda c: (c.run / "metrics.json").write_bytes(b"\x00" * 16)),
    Case("report-without-markers", figures_argv(), 2, ("{report}", "lacks the markers"),
         setup=lambda c: c.report.write_text("# Report\n\nno markers here\n")),
    Case("report-markers-reversed", figures_argv(), 2, ("{report}", "lacks the markers"),
         setup=lambda c: c.report.write_text("<!-- results:end -->\n<!-- results:begin -->\n")),
    Case("report-missing", figures_argv(report=lambda c: c.tmp / "missing.md"), 2, ("{tmp}/missing.md", "missing")),
    Case("out-dir-under-a-file", figures_argv(out=lambda c: c.tmp / "a_file" / "figures"), 2,
         ("{tmp}/a_file/figures",), setup=lambda c: (c.tmp / "a_file").write_text("keep me\n")),
    Case("report-not-writable", figures_argv(), 2, ("cannot write {report}", "Permission denied"),
         setup=failing_report_write, may_change=("figures/*",)),
]


@pytest.fixture
def figures_ctx(finished_run, tmp_path, monkeypatch):
    """A copy of the finished run, a report with markers, and a figures folder holding an earlier report's files."""
    shutil.copytree(finished_run, tmp_path / "run")
    (tmp_path / "report.md").write_text(REPORT_TEXT)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "bpd_curves.png").write_bytes(b"an earlier figure")
    (tmp_path / "figures" / "results.md").write_text("# Results\n\nearlier results\n")
    return context(tmp_path, monkeypatch, run=tmp_path / "run", run2=tmp_path / "run_z2",
                   report=tmp_path / "report.md", out=tmp_path / "figures")


@pytest.mark.parametrize("case", params(FIGURE_CASES))
def test_make_figures_bad_input(case, figures_ctx, capsys):
    run_case(case, make_figures.cli, "make_figures.py", figures_ctx, capsys)
