"""What `auto` chose is recorded and reused: the first printed line, args.json, the checkpoint; a resume never
detects the hardware again; a compile failure is one warning line and training goes on eagerly."""
import json

import pytest
import torch

import train_torch
from conftest import SMALL, run_dirs
from dgmkit.engine import epoch, hardware
from dgmkit.runs.checkpoints import load_checkpoint
from dgmkit.vae import bounds
from dgmkit.vae import model as vae_model


def test_auto_choice_is_printed_recorded_and_reused_on_resume(tiny_data, tmp_path, monkeypatch, capsys):
    # A machine whose auto choice differs from this one's (channels_last off; mocked), for a 1-epoch run.
    fake = {"precision": "fp32", "compile": False, "channels_last": False, "warning": "",
            "why": {"precision": "auto: mocked", "compile": "auto: 5 steps < 5,000",
                    "channels_last": "auto: mocked"}}
    monkeypatch.setattr(hardware, "choose", lambda *args: dict(fake))
    argv = ["--data_dir", str(tiny_data), "--log_dir", str(tmp_path / "cut"), *SMALL]
    train_torch.main(train_torch.parse_args([*argv, "--epochs", "1"]))
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("precision fp32 (auto: mocked) | compile off") and "channels_last off" in first_line
    run_dir = run_dirs(tmp_path / "cut")[0]
    recorded = json.loads((run_dir / "args.json").read_text())["auto_choices"]
    assert recorded["precision"] == "fp32" and recorded["channels_last"] is False
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["args"]["auto_choices"] == recorded

    # The resume must not ask the hardware again: a call now fails the test.
    monkeypatch.setattr(hardware, "choose", lambda *args: pytest.fail("resume re-detected the hardware"))
    resumed = train_torch.main(train_torch.parse_args(["--resume", str(run_dir), "--epochs", "2",
                                                       "--no-progress_bar"]))
    # ... and ends exactly where an uninterrupted run with the same choices ends.
    monkeypatch.setattr(hardware, "choose", lambda *args: dict(fake))
    whole = train_torch.main(train_torch.parse_args(["--data_dir", str(tiny_data), "--log_dir",
                                                     str(tmp_path / "whole"), *SMALL]))
    assert resumed["test_bpd"] == whole["test_bpd"]


def test_a_compile_failure_is_one_line_and_training_goes_on(monkeypatch, capsys):
    def broken_compile(fn, mode=None):
        def compiled(*args):
            raise RuntimeError("InductorError: no working C++ compiler\nlong details")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(0)
    model = vae_model.VAE(4, 2, 1e-3)
    imgs = torch.randint(0, 16, (3, 1, 28, 28))
    step = epoch.CompiledOrEager(lambda x: bounds.objective(model, x))
    torch.manual_seed(1)
    terms = step(imgs)
    torch.manual_seed(1)
    eager = bounds.objective(model, imgs)
    assert torch.equal(terms["loss"], eager["loss"])  # the retry drew the same noise as an eager call
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "torch.compile failed (InductorError: no working C++ compiler)" in err[0]
    step(imgs)  # later calls go straight to eager: no second warning
    assert capsys.readouterr().err == ""
