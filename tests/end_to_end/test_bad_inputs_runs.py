"""Bad inputs and interruptions of the scripts that read or make runs: part1/evaluate.py, part1/benchmark.py,
report/make_figures.py and part1/sweep.py, one table of cases per script, each keeping the contract of
cli_contract.py. The cases that need a trained run use copies of the shared finished run (conftest).
train_torch.py: test_bad_inputs.py (fresh runs) and test_bad_inputs_resume.py."""
import errno
import os
import shutil
from pathlib import Path

import pytest
import torch

import benchmark
import evaluate
import make_figures
import sweep
from cli_contract import Case, argparse_cases, context, fail_writes, params, run_case
from conftest import RunsCode
from dgmkit.cli.runner import run_cli
from dgmkit.errors import Terminated

REPORT_TEXT = "# Report\n\n<!-- results:begin -->\nold table\n<!-- results:end -->\n\nText after.\n"


# ---- evaluate.py -----------------------------------------------------------------------------------

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
    c.mp.setattr(os, "access", lambda path, mode, *a, **k: False if Path(path) == c.run
                 else real(path, mode, *a, **k))


def old_eval_and_full_disk(c):
    (c.run / "eval_test.json").write_text('{"iw_bpd": 1.5}\n')
    fail_writes(c.mp, errno.ENOSPC, lambda path: c.run in path.parents)


EVAL_CASES = [
    Case("missing-checkpoint", eval_argv(target=lambda c: c.tmp / "no_such_run"), 2,
         ("checkpoint not found: {tmp}/no_such_run",)),
    Case("folder-that-is-not-a-run", eval_argv(target=lambda c: c.tmp / "empty_run"), 2,
         ("checkpoint not found: {tmp}/empty_run/checkpoints/best.pt",), setup=lambda c: (c.tmp / "empty_run").mkdir()),
    Case("run-folder-without-best-pt", eval_argv(), 2, ("checkpoint not found: {run}/checkpoints/best.pt",),
         setup=lambda c: (c.run / "checkpoints" / "best.pt").unlink()),
    *[Case(f"checkpoint-cut-at-{size}-bytes", eval_argv(target=lambda c: c.tmp / "cut.pt"), 2,
           ("{tmp}/cut.pt is truncated or corrupt",), setup=lambda c, size=size: (c.tmp / "cut.pt").write_bytes(
               (c.run / "checkpoints" / "best.pt").read_bytes()[:size])) for size in (1000, 3000)],
    Case("checkpoint-not-ours", eval_argv(target=lambda c: c.tmp / "weights.pt"), 2,
         ("{tmp}/weights.pt is not a checkpoint of train_torch.py",),
         setup=save_to("weights.pt", lambda c: {"weight": torch.zeros(2)})),
    Case("checkpoint-that-runs-code", eval_argv(target=lambda c: c.tmp / "evil.pt"), 2, ("refusing to load",),
         setup=save_to("evil.pt", lambda c: {"model": {}, "args": {"z_dim": 2, "num_filters": 8},
                                             "x": RunsCode(c.tmp / "pwned")}),
         check=lambda c: not (c.tmp / "pwned").exists() or pytest.fail("the checkpoint ran code")),
    Case("checkpoint-args-do-not-match-weights", eval_argv(target=lambda c: c.tmp / "other.pt"), 2,
         ("{tmp}/other.pt does not match the VAE",), setup=save_to("other.pt", other_z_dim)),
    *argparse_cases(eval_argv, [
        ("iw-samples-zero", "--iw_samples", "0", "at least 1"), ("seed-negative", "--seed", "-1"),
        ("split-dev", "--split", "dev", "dev"), ("device-tpu", "--device", "tpu", "tpu"),
        ("batch-size-text", "--batch_size", "x", "'x'")]),
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


@pytest.mark.parametrize("case", params(EVAL_CASES))
def test_evaluate_bad_input(case, run_ctx, capsys):
    run_case(case, evaluate.cli, "evaluate.py", run_ctx, capsys)
    assert run_ctx.out == ""


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
    *argparse_cases(bench_argv, [
        ("steps-zero", "--steps", "0", "at least 1"), ("repeats-zero", "--repeats", "0", "at least 1"),
        ("batch-size-zero", "--batch_size", "0", "at least 1"), ("num-images-text", "--num_images", "x", "'x'"),
        ("warmup-negative", "--warmup", "-1"), ("device-tpu", "--device", "tpu", "tpu")]),
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
    Case("second-run-without-history", figures_argv(lambda c: c.run, lambda c: c.run2), 2,
         ("{run2}/history.jsonl is missing or empty",),
         setup=lambda c: (shutil.copytree(c.run, c.run2), (c.run2 / "history.jsonl").unlink())),
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


# ---- sweep.py ----------------------------------------------------------------------------------------

GRID4 = ["--objectives", "elbo", "iwae", "--train_samples", "2", "--flows", "none", "planar", "--flow_lengths", "2"]


def sweep_argv(*flags):
    """A 4-point grid into {tmp}/sweep (refused before any run: the folder must not appear)."""
    return lambda c: [c.tmp / "sweep", *GRID4, *flags]


SWEEP_CASES = [
    Case("seed-after-dashes", sweep_argv("--", "--seed", "3"), 2, ("--seed after -- is set by the sweep",)),
    Case("bad-training-flag", sweep_argv("--", "--epochs", "-1"), 2,
         ("training flags after --: argument --epochs: must be at least 0, got -1",)),
    Case("run-folder-flags-after-dashes", sweep_argv("--", "--run_name", "x", "--log_dir", "y"), 2,
         ("--log_dir --run_name after -- is set by the sweep",)),
    Case("only-outside-the-grid", sweep_argv("--only", "4", "--", "--epochs", "1"), 2,
         ("--only 4: the grid has 4 points (0 .. 3)",)),
]


@pytest.mark.parametrize("case", params(SWEEP_CASES))
def test_sweep_bad_input(case, tmp_path, monkeypatch, capsys):
    run_case(case, sweep.cli, "sweep.py", context(tmp_path, monkeypatch), capsys)
