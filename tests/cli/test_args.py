"""dgmkit/cli/args.py: the parser's usage error is one line (exit status 2), the argparse types' ranges and messages,
the paths a user typed resolved where they enter (a link loop or a dangling link one line), run names that stay
inside --log_dir."""
import argparse

from pathlib import Path

import pytest

from dgmkit.cli.args import (SEED_MAX, ArgumentParser, absolute, int_at_least, positive_float, resolve_path, run_name_type,
                             seed_type)
from dgmkit.errors import UserError


def test_a_usage_error_is_one_line_with_status_2(capsys):
    parser = ArgumentParser(prog="tool.py")
    parser.add_argument("--n", type=int_at_least(1), default=3, help="how many")
    assert parser.parse_args([]).n == 3
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--n", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err == "tool.py: error: argument --n: must be at least 1, got 0 (see --help)\n"
    assert "how many (default: 3)" in parser.format_help()  # --help: the whole usage, with the defaults


@pytest.mark.parametrize("minimum, maximum, text, says", [
    (1, None, "0", "must be at least 1, got 0"),
    (0, 2, "3", "must be between 0 and 2, got 3"),
    (0, 2, "-1", "must be between 0 and 2, got -1"),
    (1, None, "2.5", "expected an integer, got '2.5'"),
    (1, None, "x", "expected an integer, got 'x'"),
])
def test_int_at_least_refuses(minimum, maximum, text, says):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        int_at_least(minimum, maximum)(text)
    assert str(info.value) == says


def test_int_at_least_accepts_its_bounds():
    assert int_at_least(1)("1") == 1 and int_at_least(1)("10000000000") == 10 ** 10
    assert int_at_least(0, 2)("0") == 0 and int_at_least(0, 2)("2") == 2 and int_at_least(-3)("-3") == -3
    assert seed_type("0") == 0 and seed_type(str(SEED_MAX)) == 2 ** 32 - 1
    with pytest.raises(argparse.ArgumentTypeError):
        seed_type(str(2 ** 32))  # numpy's legacy seeding takes 0 .. 2**32 - 1


@pytest.mark.parametrize("text", ["0", "-1e-3", "nan", "inf", "-inf"])
def test_positive_float_refuses_what_is_not_a_finite_positive_number(text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"must be a finite number > 0, got {text}$"):
        positive_float(text)


def test_positive_float():
    assert positive_float("1e-3") == 0.001 and positive_float("2") == 2.0
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number, got 'fast'"):
        positive_float("fast")


@pytest.mark.parametrize("text", ["", ".", "..", ".hidden", "a/b", "../up", "a\\b", "nul\0", "x" * 201])
def test_a_run_name_is_one_plain_folder_name(text):
    with pytest.raises(argparse.ArgumentTypeError):
        run_name_type(text)


def test_run_names_that_stay_inside():
    assert run_name_type("elbo-k1_none-l0_s42") == "elbo-k1_none-l0_s42" and run_name_type("x" * 200) == "x" * 200
    with pytest.raises(argparse.ArgumentTypeError, match="is 201 bytes long; at most 200"):
        run_name_type("x" * 201)


def test_resolve_path(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    assert resolve_path("link", "--data_dir") == tmp_path.resolve() / "real"  # absolute and link-free
    assert resolve_path("new/sub", "--log_dir") == tmp_path.resolve() / "new" / "sub"  # need not exist
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(UserError, match=r"^--data_dir loop: a loop of symbolic links; fix or remove the link$"):
        resolve_path("loop", "--data_dir")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"^--log_dir dangling is a dangling symbolic link \(to .*nowhere\)"):
        resolve_path("dangling", "--log_dir")


def test_absolute_resolves_without_raising(tmp_path, monkeypatch):
    """The link-free absolute form (relative: from the current folder); a link loop, which resolve_path refuses
    in one line, comes back as the plain absolute path instead of an exception."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    monkeypatch.chdir(tmp_path)
    assert absolute("link/x") == (tmp_path / "real" / "x").resolve()
    assert absolute("loop/x") == Path.cwd() / "loop" / "x"
