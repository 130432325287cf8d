"""train_realnvp.py: its parser is the family's under the script's name, main trains the flow with the family's steps
and returns exactly what metrics.json holds, and cli runs it to a clean exit (the run folder:
tests/realnvp/test_family.py; bad inputs and resume: tests/end_to_end/test_2019_runs.py)."""
import json
from pathlib import Path

import pytest

import train_realnvp
from conftest import REALNVP_SMALL, train_2019
from dgmkit.realnvp.config import RealNVPConfig
from dgmkit.realnvp.family import REALNVP_FAMILY


def test_the_parser_is_the_familys_under_the_scripts_name(capsys):
    with pytest.raises(SystemExit) as info:
        train_realnvp.parse_args(["--help"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("usage: train_realnvp.py ")
    assert isinstance(train_realnvp.parse_args([]), RealNVPConfig)
    assert REALNVP_FAMILY.script == Path(train_realnvp.__file__).resolve()  # a resume hint names this script


def test_main_returns_what_metrics_json_holds(mnist_8bit, tmp_path, capsys):
    metrics = train_2019(train_realnvp, REALNVP_SMALL, mnist_8bit, tmp_path, 1)
    assert metrics == json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert capsys.readouterr().out.splitlines()[-1].startswith(REALNVP_FAMILY.summary(metrics))


def test_cli_ends_cleanly(mnist_8bit, tmp_path, capsys):
    train_realnvp.cli(["--data_dir", str(mnist_8bit), "--log_dir", str(tmp_path), *REALNVP_SMALL, "--epochs", "0",
                    "--run_name", "r"])
    assert capsys.readouterr().err == "" and (tmp_path / "r" / "metrics.json").is_file()


def test_help_says_the_2019_flow_is_8_bit(capsys):
    """Issue 25, cause 21: --help said --dataset mnist goes "with --bits 1" in 2019 (the VAE's words); the 2019 flow
    is 8-bit."""
    with pytest.raises(SystemExit):
        train_realnvp.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--bits 1" not in text and "mnist (the 2019 assignment, 8-bit: --bits 8, the default)" in text
    assert "fp32 only" in text and "0 < T <= 100" in text
