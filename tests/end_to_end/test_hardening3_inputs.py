"""The third adversarial round (issue 25), its bad inputs in real processes (and their variants in-process, the
CLI's own function with the same argv): a model too large for memory in every family, typed or read from a
checkpoint being resumed (cause 10); --beta1 out of Adam's range typed, through sweep.py and in a checkpoint
(cause 9); a path whose name is not valid UTF-8, typed or in the current folder's path (cause 16). Each is one line
on stderr, exit status 2, and no run folder made or changed. A last batch of one image
in the GAN (cause 8): tests/test_train_gan.py and tests/gan/test_model.py; the flags' ranges themselves:
tests/cli/test_args.py and tests/engine/test_settings.py; the memory check's counting: tests/engine/test_memory.py.
"""
import os
import subprocess
import sys

import pytest

import train_gan
import train_realnvp
import train_torch
from cli_contract import edit_checkpoint, snapshot
from conftest import GAN_SMALL, PART1, REALNVP_SMALL, REPO_ROOT, train_2019

SCRIPTS = {"gan": (train_gan, GAN_SMALL), "realnvp": (train_realnvp, REALNVP_SMALL)}
CPU = ["--device", "cpu", "--no-progress_bar", "--sample_epochs", "--epochs", "1"]
NOT_UTF8 = b"runs\xff"


def run(script, *args, cwd=REPO_ROOT):
    """part1/<script> in a fresh interpreter (one torch thread); args may hold names that are not UTF-8 (as
    os.fsdecode gives them: the child gets the bytes). Returns (status, the non-empty stderr lines)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(PART1 / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, errors="backslashreplace", timeout=240)
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


def in_process(cli, argv, capsys):
    """The CLI's function on argv in this process: (status, the non-empty stderr lines), as run gives them."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli([str(a) for a in argv])
    return info.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def one_line(result, script, *says):
    status, lines = result
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"{script}: error: ") and all(text in lines[0] for text in says), lines[0]
    return lines[0]


# ---- cause 10: one memory check, every family, typed and from a checkpoint ----

@pytest.mark.slow
@pytest.mark.parametrize("script, flags, says", [
    ("train_gan.py", ["--latent_dim", "2000000000"], "lower --latent_dim"),
    ("train_realnvp.py", ["--hidden_channels", "300000"], "lower --hidden_channels, --num_blocks or --couplings"),
], ids=["gan-latent-dim", "realnvp-hidden-channels"])
def test_a_model_too_large_is_one_line_and_no_folder(script, flags, says, mnist_8bit, tmp_path):
    logs = tmp_path / "logs"
    one_line(run(script, "--data_dir", mnist_8bit, "--log_dir", logs, *CPU, *flags), script, "the model does not fit",
             says)
    assert not logs.exists()


@pytest.mark.parametrize("cli, flags, says", [
    (train_realnvp.cli, ["--num_blocks", "1000000000", "--hidden_channels", "64"], "lower --hidden_channels"),
    (train_realnvp.cli, ["--hidden_channels", "10000000000"], "more elements than 64-bit sizes can count"),
    (train_gan.cli, ["--latent_dim", str(2 ** 62)], "more elements than 64-bit sizes can count"),
    (train_torch.cli, ["--dataset", "mnist", "--flow", "planar", "--flow_length", "100000000000"],
     "lower --z_dim, --num_filters or --flow_length"),
], ids=["realnvp-num-blocks", "realnvp-beyond-64-bits", "gan-beyond-64-bits", "vae-flow-length"])
def test_other_sizes_too_large_in_process(cli, flags, says, mnist_8bit, tmp_path, capsys):
    """A billion residual blocks is counted at once (memory.parameter_count), a weight beyond 64-bit sizes is refused
    like one too large, and the VAE's check (the same one) names --flow_length too."""
    script = f"{cli.__module__}.py"
    one_line(in_process(cli, ["--data_dir", mnist_8bit, "--log_dir", tmp_path / "logs", *CPU, *flags], capsys),
             script, "the model does not fit", says)
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("family, setting, value, says", [
    ("gan", "latent_dim", 2_000_000_000, "lower --latent_dim"),
    ("realnvp", "hidden_channels", 300_000, "lower --hidden_channels, --num_blocks or --couplings"),
])
def test_a_checkpoint_whose_model_is_too_large_is_one_line(family, setting, value, says, mnist_8bit, tmp_path):
    """The sizes read back from a checkpoint's settings (edited here) reach the same check before anything is
    allocated or written: the run folder is unchanged byte for byte."""
    script, flags = SCRIPTS[family]
    train_2019(script, flags, mnist_8bit, tmp_path, 1)
    run_dir = tmp_path / "r"
    edit_checkpoint(run_dir / "checkpoints" / "last.pt", lambda state: state["args"].__setitem__(setting, value))
    before = snapshot(tmp_path)
    one_line(run(f"train_{family}.py", "--resume", run_dir, "--epochs", "2"), f"train_{family}.py",
             "the model does not fit", says)
    assert snapshot(tmp_path) == before


# ---- cause 9: --beta1 in Adam's [0, 1), typed, through a sweep and from a checkpoint ----

@pytest.mark.slow
def test_beta1_out_of_range_typed_is_one_line(mnist_8bit, tmp_path, capsys):
    argv = ["--data_dir", mnist_8bit, "--log_dir", tmp_path / "logs", *CPU, "--beta1"]
    one_line(run("train_gan.py", *argv, "1.0"), "train_gan.py", "argument --beta1: must be a number in [0, 1), got 1.0")
    one_line(in_process(train_gan.cli, [*argv, "1.5"], capsys), "train_gan.py", "in [0, 1), got 1.5")
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_beta1_out_of_range_through_a_sweep_is_one_line(mnist_8bit, tmp_path):
    one_line(run("sweep.py", tmp_path / "sweep", "--family", "gan", "--seeds", "1", "--", "--data_dir", mnist_8bit,
                 *CPU, "--beta1", "1.0"), "sweep.py", "argument --beta1: must be a number in [0, 1), got 1.0")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_beta1_out_of_range_in_a_checkpoint_is_one_line(mnist_8bit, tmp_path):
    train_2019(train_gan, GAN_SMALL, mnist_8bit, tmp_path, 1)
    run_dir = tmp_path / "r"
    edit_checkpoint(run_dir / "checkpoints" / "last.pt", lambda state: state["args"].__setitem__("beta1", 1.0))
    before = snapshot(tmp_path)
    one_line(run("train_gan.py", "--resume", run_dir, "--epochs", "2"), "train_gan.py", "last.pt, args: argument "
             "--beta1: must be a number in [0, 1), got 1.0; the file is damaged")
    assert snapshot(tmp_path) == before


# ---- cause 16: a path that is not valid UTF-8, refused where it is parsed, before any folder is made ----

@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--log_dir", "--data_dir", "--resume", "--run_name"])
def test_a_path_that_is_not_utf8_is_one_line_and_no_folder(flag, mnist_8bit, tmp_path, capsys):
    """--log_dir as bytes in a real process (TensorBoard's traceback before); the other path flags in-process with
    the text Python makes of those bytes (os.fsdecode), the same argparse types."""
    bad = os.fsdecode(NOT_UTF8) if flag == "--run_name" else os.fsdecode(os.path.join(os.fsencode(tmp_path), NOT_UTF8))
    paths = {"--data_dir": mnist_8bit, "--log_dir": tmp_path / "logs", flag: bad}
    argv = [*(p for kv in paths.items() for p in kv), *CPU]
    result = run("train_gan.py", *argv) if flag == "--log_dir" else in_process(train_gan.cli, argv, capsys)
    one_line(result, "train_gan.py", f"argument {flag}: '", "runs\\xff' is not valid UTF-8")
    assert os.listdir(tmp_path) == []  # neither the folder nor logs/ was made


@pytest.mark.slow
def test_a_relative_log_dir_inside_a_folder_that_is_not_utf8_is_one_line(mnist_8bit, tmp_path):
    """Typed in UTF-8, but its absolute path is not: refused by resolve_path, before the run folder is made (it was
    TensorBoard's UnicodeEncodeError traceback and a half-made run folder)."""
    here = os.path.join(os.fsencode(tmp_path), NOT_UTF8)
    os.mkdir(here)
    one_line(run("train_realnvp.py", "--data_dir", mnist_8bit, "--log_dir", "logs", *CPU, cwd=here),
             "train_realnvp.py", "--log_dir logs: its absolute path '", "runs\\xff/logs' is not valid UTF-8")
    assert os.listdir(here) == []
