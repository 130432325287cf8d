"""The CLI error contract and the machinery the tests/end_to_end/test_bad_inputs*.py tables share.

The contract (part1/README.md, "Exit statuses"): every bad input or interruption of part1/train_torch.py,
part1/evaluate.py, part1/benchmark.py, part1/sweep.py and report/make_figures.py ends with the documented
exit status (2 bad input, 1 NaN/Inf loss, 130 SIGINT, 143 SIGTERM), exactly one non-empty line on stderr
(no traceback, no argparse usage block) that starts with the script's name and says what is wrong, and loses
nothing written before: every file that existed is unchanged byte for byte, no *.tmp is left, and no stray
file or folder appears (unless a case names what may change, e.g. the fresh run folder of a run that failed
in epoch 2).

Each case is a Case row run by run_case: the script's CLI in-process (pytest.raises(SystemExit)).
"""
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable
from urllib.error import URLError

import pytest
import torch
import torchvision.datasets.mnist

NO_CUDA = "needs a machine without CUDA"


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
    """Make the atomic writes' os.replace fail with error_number for targets where when(path) is true (patched on
    os itself: the writer's module looks it up at call time)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if when(Path(dst)):
            raise OSError(error_number, os.strerror(error_number))
        return real(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", replace)


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
    """Run one case through main_cli and check the common contract; returns the error line (also ctx.line;
    what went to stdout is ctx.out)."""
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
    captured = capsys.readouterr()
    err, ctx.out = captured.err, captured.out
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == case.status, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    line = ctx.line = lines[0]
    assert line.startswith(f"{prog}: "), line
    assert "Traceback" not in line and "Exception in thread" not in line, line
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


def argparse_cases(argv, rows):
    """Cases for values argparse refuses (status 2, "argument --flag" and the given texts in the line):
    rows of (id, flag, value, *texts); argv(*flags) gives the case's command line."""
    return [Case(id, argv(flag, value), 2, (f"argument {flag}", *texts)) for id, flag, value, *texts in rows]
