"""dgmkit/cli/args.py: the parser's usage error is one line (exit status 2), the argparse types' ranges and messages,
the paths a user typed resolved where they enter (a link loop or a dangling link one line), run names that stay
inside --log_dir."""
import argparse
import os
from pathlib import Path

import pytest

from dgmkit.cli.args import (INT_MAX, SEED_MAX, ArgumentParser, absolute, float_between, int_at_least, path_type,
                             positive_float, resolve_path, run_name_type, seed_type)
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


# ---- issue 25: the ranges torch and Adam would refuse (cause 9), paths that are not UTF-8 (cause 16) ----

def test_an_integer_beyond_64_bits_is_refused():
    """torch's sizes are 64-bit: a larger count (--batch_size 10**30) was an overflow traceback inside torch."""
    assert int_at_least(1)(str(INT_MAX)) == 2 ** 63 - 1
    with pytest.raises(argparse.ArgumentTypeError, match=r"^must be at most 2\*\*63 - 1 \(a 64-bit integer\), got "
                                                         f"{2 ** 63}$"):
        int_at_least(1)(str(2 ** 63))


@pytest.mark.parametrize("text", ["1", "1.0", "1.5", "-0.1", "nan", "inf", "-inf"])
def test_float_between_refuses_what_adams_beta_cannot_be(text):
    with pytest.raises(argparse.ArgumentTypeError, match=rf"^must be a number in \[0, 1\), got {text}$"):
        float_between(0, 1, high_open=True)(text)


def test_float_between_keeps_its_closed_ends():
    beta = float_between(0, 1, high_open=True)
    assert beta("0") == 0.0 and beta("0.999") == 0.999
    temperature = float_between(0, 100, low_open=True)
    assert temperature("100") == 100.0 and temperature("1e-3") == 0.001
    with pytest.raises(argparse.ArgumentTypeError, match=r"^must be a number in \(0, 100\], got 0$"):
        temperature("0")
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number, got 'warm'"):
        temperature("warm")


NOT_UTF8 = os.fsdecode(b"runs\xff")  # what Python makes of a name with a byte that is not UTF-8


def test_path_type_refuses_a_name_that_is_not_utf8():
    assert path_type("runs/é") == Path("runs/é")
    with pytest.raises(argparse.ArgumentTypeError) as info:
        path_type(NOT_UTF8)
    assert str(info.value).startswith("'runs\\xff' is not valid UTF-8 (TensorBoard and the run's records need")
    with pytest.raises(argparse.ArgumentTypeError, match="holds a NUL character"):
        path_type("a\0b")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'r\\xff' is not valid UTF-8"):
        run_name_type(os.fsdecode(b"r\xff"))


def test_resolve_path_refuses_a_name_that_is_not_utf8_typed_or_in_the_current_folder(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"^--log_dir 'runs\\xff' is not valid UTF-8"):
        resolve_path(NOT_UTF8, "--log_dir")
    here = os.path.join(os.fsencode(tmp_path), b"cwd\xff")
    os.mkdir(here)
    monkeypatch.chdir(here)
    with pytest.raises(UserError) as info:
        resolve_path("logs", "--log_dir")  # typed in UTF-8, but the folder it is in is not
    assert str(info.value).startswith("--log_dir logs: its absolute path '") and "cwd\\xff/logs' is not" in str(
        info.value)
    assert os.listdir(here) == []  # nothing was made


def test_a_parser_error_quoting_a_newline_is_one_line(capsys):
    """Issue 25 #17: argparse quotes what was typed (`train_gan.py $'a\\nb'`): its error stays one line."""
    parser = ArgumentParser(prog="tool.py")
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["a\nb"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "tool.py: error: unrecognized arguments: a\\nb (see --help)\n"
