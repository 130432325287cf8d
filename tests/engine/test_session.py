"""dgmkit/engine/session.py: what `auto` chose is printed, recorded (args.json, the checkpoint) and reused on a resume,
which never detects the hardware again; a resume honours a flag typed at its default value and rewrites args.json
with the new settings."""
import json

import pytest

import train_torch
from conftest import SMALL, history_without_time, run_dirs
from dgmkit.engine import hardware, session
from dgmkit.runs.checkpoints import load_checkpoint
from train_torch import main, parse_args


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


# ---- flags a user typed are honoured, even when they equal the default ----------------------------------

def test_resume_honours_a_typed_value_equal_to_the_default(finished_run):
    """--epochs 80 (the default) on a 2-epoch run means 80, not "not given"."""
    merged, state = session.resumed_settings(parse_args(["--resume", str(finished_run), "--epochs", "80"]))
    assert state["epoch"] == 2 and merged.epochs == 80
    merged, _ = session.resumed_settings(parse_args(["--resume", str(finished_run)]))
    assert merged.epochs == 2  # not typed: the run's own value


def test_resume_rewrites_args_json_with_the_new_settings(tiny_data, tmp_path):
    main(parse_args(["--data_dir", str(tiny_data), "--log_dir", str(tmp_path), *SMALL, "--epochs", "1"]))
    run_dir = run_dirs(tmp_path)[0]
    main(parse_args(["--resume", str(run_dir), "--epochs", "2", "--no-progress_bar"]))
    args = json.loads((run_dir / "args.json").read_text())
    assert args["epochs"] == 2 and args["resume"] == "."  # the resumed folder itself, relative to it
    assert len(history_without_time(run_dir)) == 2


def test_a_resume_trains_at_the_recorded_thread_count(finished_run, tmp_path, monkeypatch):
    """The thread count changes the last bits of the CPU's sums, so a resume takes the recorded one (not what this
    process happens to have), unless OMP_NUM_THREADS says otherwise."""
    import shutil

    import torch
    shutil.copytree(finished_run, tmp_path / "run")
    args = json.loads((tmp_path / "run" / "args.json").read_text())
    recorded = args["auto_choices"].get("threads") or 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(recorded + 1)
        metrics = main(parse_args(["--resume", str(tmp_path / "run"), "--epochs", "3"]))
        assert metrics["machine"]["threads"] == recorded and torch.get_num_threads() == recorded
        monkeypatch.setenv("OMP_NUM_THREADS", str(recorded + 1))
        torch.set_num_threads(recorded + 1)
        metrics = main(parse_args(["--resume", str(tmp_path / "run"), "--epochs", "4"]))
        assert metrics["machine"]["threads"] == recorded + 1
        saved = json.loads((tmp_path / "run" / "args.json").read_text())["auto_choices"]
        assert saved["threads"] == recorded + 1 and saved["why"]["threads"] == "explicit: OMP_NUM_THREADS"
    finally:
        torch.set_num_threads(before)


def test_fp32_on_cuda_means_fp32(monkeypatch):
    """Issue 26 #3: --precision fp32 turns TF32 off (it keeps 10 mantissa bits); auto and bf16 allow it. The flags
    are global torch settings, set here without a GPU and put back."""
    import torch
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for precision, tf32 in (("fp32", False), ("auto", True), ("bf16", True), ("fp32", False)):
            session.configure_cuda(False, precision)
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (tf32, tf32)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_a_cpu_resume_keeps_a_gpu_checkpoints_states_and_says_it_is_not_exact(finished_run, tmp_path, capsys):
    """Issue 26 #2: a checkpoint as a GPU run writes it (one GPU's generator state) resumed on the CPU: one note that
    the resume is not bit-exact, and the GPU state is still in the new checkpoint for a later GPU resume."""
    import shutil

    import torch
    shutil.copytree(finished_run, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    gpu_state = torch.arange(16, dtype=torch.uint8)
    state["rng"]["cuda"] = [gpu_state]
    torch.save(state, last)
    capsys.readouterr()
    main(parse_args(["--resume", str(tmp_path / "run"), "--epochs", "3", "--device", "cpu"]))
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert notes == ["note: the checkpoint was trained on CUDA and this resume runs on the CPU: its noise comes from "
                     "another generator, so the resume is not bit-exact (the GPU states are kept for a later GPU "
                     "resume)"]
    assert [s.tolist() for s in load_checkpoint(last)["rng"]["cuda"]] == [gpu_state.tolist()]


def test_a_gpu_checkpoint_resumed_on_the_cpu_decides_auto_again(finished_run, tmp_path, capsys):
    """Issue 26 #1: a checkpoint as an H100 run writes it (auto chose bf16 and compiling there; its GPU generator's
    state) resumed on this CPU: `auto` is decided again here, once noted, recorded with both segments; the GPU's
    recorded choices are not reused. A resume on the same machine reuses them (test above)."""
    import shutil

    import torch
    shutil.copytree(finished_run, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    h100 = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "cpus": 16}
    gpu_used = {"precision": "bf16", "compile": True, "channels_last": True, "threads": 16}
    state["args"]["auto_choices"] = {**gpu_used, "why": {"precision": "auto: native bf16 on this GPU"},
                                     "warning": "", "where": h100, "segments": [{"from_epoch": 1, "where": h100,
                                                                                 **gpu_used}]}
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    torch.save(state, last)
    capsys.readouterr()
    main(parse_args(["--resume", str(tmp_path / "run"), "--epochs", "3", "--device", "cpu"]))
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note: resumed on ")]
    here = session.where(torch.device("cpu"))
    assert len(notes) == 1 and "not the NVIDIA H100 80GB HBM3 (cuda, 16 CPUs)" in notes[0], out
    assert "threads 16 -> " in notes[0] and "compile True -> False" in notes[0] and "not bit-exact" in notes[0]
    recorded = json.loads((tmp_path / "run" / "args.json").read_text())["auto_choices"]
    assert recorded["where"] == here and "note" not in recorded
    assert [s["from_epoch"] for s in recorded["segments"]] == [1, 3]
    assert recorded["segments"][0]["where"] == h100 and recorded["segments"][1]["where"] == here
    assert recorded["threads"] != 16 and recorded["compile"] is False  # decided here (a 1-epoch CPU segment)
    assert load_checkpoint(last)["args"]["auto_choices"] == recorded


def test_a_device_typed_on_a_resume_is_not_saved_for_the_next(finished_run, tmp_path):
    """Issue 26 #6: `--resume RUN --device cpu` on a laptop must not make the next plain resume (on the cluster)
    train on the CPU: the run keeps its recorded device; the segment ran where it was told."""
    import shutil
    shutil.copytree(finished_run, tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "args.json").read_text())["device"]
    assert recorded == "cpu"  # SMALL runs on the CPU: record another device, as a cluster run's "auto"
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    state["args"]["device"] = "auto"
    import torch
    torch.save(state, last)
    metrics = main(parse_args(["--resume", str(tmp_path / "run"), "--epochs", "3", "--device", "cpu"]))
    assert metrics["device"] == "cpu"  # this segment ran where it was told
    assert json.loads((tmp_path / "run" / "args.json").read_text())["device"] == "auto"
    assert load_checkpoint(last)["args"]["device"] == "auto"


def test_a_precision_typed_on_a_resume_changes_it_from_then_on(finished_run, tmp_path, capsys):
    """Issue 26: a run started under auto (bf16 here, say, recorded) may be resumed with --precision fp32, e.g. on a
    laptop that emulates bf16: one note line, the choice and a new segment recorded; typed again, nothing changes."""
    import shutil

    import torch
    shutil.copytree(finished_run, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    state["args"]["precision"] = "bf16"  # as started with --precision bf16
    state["args"]["auto_choices"]["precision"] = "bf16"
    torch.save(state, last)
    capsys.readouterr()
    main(parse_args(["--resume", str(tmp_path / "run"), "--epochs", "3", "--precision", "fp32"]))
    out = capsys.readouterr().out
    assert "note: --precision fp32 (the run had bf16): precision bf16 -> fp32 from epoch 3; the resume is not " \
           "bit-exact" in out
    assert out.splitlines()[1].startswith("precision fp32 (explicit)")
    args = json.loads((tmp_path / "run" / "args.json").read_text())
    assert args["precision"] == "fp32" and args["auto_choices"]["precision"] == "fp32"
    assert args["auto_choices"]["segments"][-1]["from_epoch"] == 3
    main(parse_args(["--resume", str(tmp_path / "run"), "--epochs", "4", "--precision", "fp32"]))
    assert "note: --precision" not in capsys.readouterr().out
