"""dgmkit/engine/loop.py (fit, print_setup, Family): resuming a finished run changes nothing and returns its
metrics, the last epoch always gets a sample grid; and what mutation testing found untested (tests/mutation/README.md):
a run without validation (timings, no best epoch, final figures at the last epoch), the progress bars, the setup
line, the best epoch, the lines an interrupt or a non-finite loss prints, the epoch-0 grid on resume."""
import dataclasses
import io
import json
import re
import sys
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_gan
import train_torch
from conftest import SMALL, generated_data, only_run_dir
from dgmkit.engine import loop
from train_torch import main, parse_args


def test_resuming_a_finished_run_changes_nothing(finished_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    metrics = main(parse_args(["--resume", str(finished_run), "--no-progress_bar"]))
    assert metrics == json.loads((finished_run / "metrics.json").read_text())
    assert "already finished its 2 epochs" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before


def test_the_last_epoch_always_gets_a_sample_grid(finished_run):
    """SMALL saves no scheduled grid (--sample_epochs with no value): the final model still gets one."""
    assert sorted(p.name for p in finished_run.glob("samples_epoch_*.png")) == ["samples_epoch_002.png"]


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return generated_data(tmp_path_factory.mktemp("mnist_loop"), 80, 20, seed=11, folder="MNIST")


def test_a_run_without_validation_records_its_timings_no_best_epoch_and_final_figures_at_the_last_epoch(
        mnist, tmp_path, monkeypatch):
    """A 2-epoch GAN run (no validation) under a fake clock in loop.py (epoch 1 from t = 100.0 to 103.5, epoch 2 from
    200.0 to 204.25): history's seconds are 3.5 and 4.25, metrics' seconds_per_epoch 3.875; best_epoch is 0 with
    best_val_bpd None, and the final/* scalars are logged at step 2 (the last epoch: there is no best one).
    Kills `time.time() + t0`, `* t0`, `/ t0`; `sum(...) + len(history)`, `- len`, `* len`, `** len`;
    `best_epoch >= 0` and `best_epoch > -1` for best_val_bpd; `progress.best_epoch and config.epochs` as
    log_final's step."""
    ticks = iter([100.0, 103.5, 200.0, 204.25])
    monkeypatch.setattr(loop, "time", SimpleNamespace(time=lambda: next(ticks)))
    metrics = train_gan.main(train_gan.parse_args([
        "--data_dir", str(mnist), "--log_dir", str(tmp_path), "--device", "cpu", "--no-progress_bar",
        "--sample_epochs", "0", "--batch_size", "32", "--latent_dim", "8", "--epochs", "2", "--run_name", "r"]))
    run = tmp_path / "r"
    seconds = [json.loads(line)["seconds"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert seconds == [3.5, 4.25]
    assert metrics["seconds_per_epoch"] == 3.875
    assert metrics["best_epoch"] == 0 and metrics["best_val_bpd"] is None
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["best_val_bpd"] is None and saved["seconds_per_epoch"] == 3.875
    events = EventAccumulator(str(run)).Reload()
    assert [event.step for event in events.Scalars("final/final_d_loss")] == [2]


def test_progress_bars_count_the_epochs_from_where_the_run_starts(micro_data, tmp_path, capsys):
    """--progress_bar (not a terminal here): the epochs bar of a new 2-epoch run starts at 0/2 and ends at 2/2 (tqdm
    writes "Nit" instead of "N/2" once the count passes the total). Kills `initial=run.start_epoch + 1` (a bar from
    2/2 to "4it") and `progress_bar is not None` (a --progress_bar run with no bars off a terminal)."""
    flags = [flag for flag in SMALL if flag != "--no-progress_bar"]
    train_torch.main(train_torch.parse_args(["--data_dir", str(micro_data), "--log_dir", str(tmp_path), *flags,
                                             "--progress_bar"]))
    err = capsys.readouterr().err
    assert "epochs:   0%|" in err and "| 0/2 [" in err, err[-3000:]
    assert "epochs: 100%|" in err and "| 2/2 [" in err
    assert not re.search(r"epochs: \d+it \[", err)
    screen = terminal_screen(err)
    assert "epoch 1: " in err and not [row for row in screen if row.startswith("epoch ")], screen  # batch bars go
    assert [row for row in screen if row.startswith("epochs:")][-1].startswith("epochs: 100%|")


def terminal_screen(text):
    """The rows a terminal shows after printing `text`: \r returns to column 0, \n goes down a row (column 0, as a
    tty's ONLCR does), ESC[A goes up one, other characters overwrite. (How fast a machine is decides how often tqdm
    redraws a bar, so the bytes vary; what stays on the screen does not.)"""
    rows, row, col = [[]], 0, 0
    for token in re.findall(r"\x1b\[A|[\r\n]|[^\r\n\x1b]+", text):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            rows += [[] for _ in range(row + 1 - len(rows))]
        elif token == "\x1b[A":
            row = max(row - 1, 0)
        else:
            line = rows[row]
            line[col:col + len(token)] = list(token)
            col += len(token)
    return [text for text in ("".join(line).rstrip() for line in rows) if text]


class Recorder(io.StringIO):
    """A stdout that records its writes and flushes, in order."""

    def __init__(self):
        super().__init__()
        self.events = []

    def write(self, text):
        self.events.append(("write", text))
        return super().write(text)

    def flush(self):
        self.events.append(("flush", None))


def setup_line(monkeypatch, state, start_epoch, epochs=3):
    """print_setup's line for a run of `epochs` epochs starting at start_epoch (state None: a new run), and whether
    stdout was flushed after it."""
    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    run = SimpleNamespace(config=SimpleNamespace(epochs=epochs), state=state, start_epoch=start_epoch,
                          loaders=tuple(SimpleNamespace(dataset=[0] * n) for n in (72, 8, 20)),
                          choice={"precision": "fp32", "compile": False, "channels_last": False},
                          device=torch.device("cpu"), dir="RUN")
    loop.print_setup(run)
    monkeypatch.setattr(sys, "stdout", sys.__stdout__)
    return out.getvalue(), out.events[-1] == ("flush", None)


def test_the_setup_line_says_where_a_run_starts_and_is_flushed(monkeypatch):
    """The setup line, written out: a new run; a resume at epoch 2 of 3; a resume at the last epoch (3 of 3); a run
    whose 3 epochs are all trained (start 4: only the test is left). Flushed at once (a log read through a pipe shows
    it before the first epoch ends). Kills `run.start_epoch != config.epochs`, `>=` and `not ... <=` in the resume
    note, and `flush=False`."""
    head = "precision fp32 | compile off | channels_last off  |  device: cpu  |  run folder: RUN  |  " \
           "train/val/test images: 72/8/20"
    cases = [(None, 1, ""), ({"epoch": 1}, 2, "  |  resuming at epoch 2"), ({"epoch": 2}, 3, "  |  resuming at epoch 3"),
             ({"epoch": 3}, 4, "  |  all 3 epochs trained: testing")]
    for state, start_epoch, note in cases:
        text, flushed = setup_line(monkeypatch, state, start_epoch)
        assert text == head + note + "\n" and flushed, (start_epoch, text)


def test_a_family_is_immutable():
    """Family is a frozen dataclass: what a family brings cannot be swapped after it is built. Kills
    `@dataclasses.dataclass(frozen=False)`."""
    family = loop.Family(script=None, build=None, validate=None, sample_grid=None, test=None, shown=(),
                         summary=None, board=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        family.validate = print


# ---- fit's bookkeeping with the VAE family, one part swapped (dataclasses.replace on the frozen Family) -------------

def vae_args(data, logs, *extra):
    return train_torch.parse_args(["--data_dir", str(data), "--log_dir", str(logs), *SMALL, *extra])


def test_the_best_epoch_is_the_first_with_the_lowest_validation_bpd(micro_data, tmp_path):
    """Validation bpd 2.0, 2.0, 3.0 over 3 epochs (a stand-in for the VAE's validation): the best epoch is 1 (a tie
    is no improvement, a worse epoch neither), best_val_bpd 2.0, and best.pt holds epoch 1. Kills `<=`, `!=` and
    `is not` for `<` in the best-epoch update and `best_epoch > 1` for best_val_bpd."""
    from dgmkit.vae.family import VAE_FAMILY
    values = iter([2.0, 2.0, 3.0])
    family = dataclasses.replace(VAE_FAMILY, validate=lambda model, loader: {"bpd": next(values)})
    metrics = loop.fit(vae_args(micro_data, tmp_path, "--epochs", "3"), family)
    assert metrics["best_epoch"] == 1 and metrics["best_val_bpd"] == 2.0
    run = only_run_dir(tmp_path)
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=False)["epoch"] == 1


def test_an_interrupt_names_the_last_saved_epoch(micro_data, tmp_path, monkeypatch):
    """Ctrl-C during epoch 2 (the VAE's epoch raising KeyboardInterrupt on its second call): Interrupted says that
    checkpoints/last.pt holds epoch 1 and how to continue. Kills `progress.last_saved if not progress else 0`."""
    from dgmkit.errors import Interrupted
    from dgmkit.vae import family as vae_family
    calls = {"n": 0}
    real = vae_family.train_vae

    def interrupted_on_the_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(vae_family, "train_vae", interrupted_on_the_second_epoch)
    with pytest.raises(Interrupted) as info:
        train_torch.main(vae_args(micro_data, tmp_path))
    run = only_run_dir(tmp_path)
    message = str(info.value)
    assert message.startswith("stopped by SIGINT: ") and f"{run / 'checkpoints' / 'last.pt'} holds epoch 1" in message
    assert "--resume" in message


def test_a_non_finite_loss_names_the_last_finite_epoch(micro_data, tmp_path, monkeypatch):
    """A NaN loss in epoch 2 (the VAE's epoch raising NonFiniteLossError("training", 2) on its second call): the error
    says the checkpoint folder holds the last finite epoch (1). Kills `progress.last_saved if not progress else 0`
    in the NonFiniteLossError handler ("no epoch finished, so no checkpoint was written")."""
    from dgmkit.errors import NonFiniteLossError
    from dgmkit.vae import family as vae_family
    calls = {"n": 0}
    real = vae_family.train_vae

    def diverging_in_the_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise NonFiniteLossError("training", 2)
        return real(*args, **kwargs)

    monkeypatch.setattr(vae_family, "train_vae", diverging_in_the_second_epoch)
    with pytest.raises(NonFiniteLossError) as info:
        train_torch.main(vae_args(micro_data, tmp_path, "--epochs", "3"))
    run = only_run_dir(tmp_path)
    message = str(info.value)
    assert message.startswith("non-finite loss in epoch 2 (training, step 2); ")
    assert f"{run / 'checkpoints'} holds the last finite epoch (1)" in message


def test_a_resume_does_not_redraw_the_epoch_0_grid(micro_data, tmp_path):
    """--sample_epochs 0: the untrained model's grid is drawn once, by the new run; resuming it to 2 epochs leaves
    samples_epoch_000.png as it was. Kills `run.start_epoch >= 1` (every resume redraws epoch 0 with the trained
    model)."""
    train_torch.main(vae_args(micro_data, tmp_path, "--sample_epochs", "0", "--epochs", "1"))
    run = only_run_dir(tmp_path)
    grid = run / "samples_epoch_000.png"
    before = (grid.read_bytes(), grid.stat().st_mtime_ns)
    train_torch.main(train_torch.parse_args(["--resume", str(run), "--epochs", "2", "--no-progress_bar"]))
    assert (grid.read_bytes(), grid.stat().st_mtime_ns) == before
    assert (run / "samples_epoch_002.png").is_file()


def test_the_last_epoch_of_a_run_longer_than_256_epochs_gets_its_grid(micro_data, tmp_path):
    """257 epochs of a family that trains nothing (a 1-parameter model; the epochs, checkpoints and history are
    fit's own): the grid of epoch 257 is saved (epoch == config.epochs compares values; CPython caches the ints up to
    256 only, so an identity test passes below that). Kills `epoch is config.epochs`."""
    from dgmkit.vae.family import VAE_FAMILY

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        @property
        def device(self):
            return self.w.device

    def build(config, device, choice):
        model = Tiny()
        return model, torch.optim.SGD(model.parameters(), lr=0.0), lambda batches: {"bpd": 1.0}

    family = dataclasses.replace(VAE_FAMILY, build=build, validate=None, sample_grid=lambda model, config: torch.zeros(
        3, 2, 2), test=lambda run, model, writer, best_epoch: {"test_bpd": 1.0}, summary=lambda metrics: "done")
    loop.fit(vae_args(micro_data, tmp_path, "--epochs", "257"), family)
    run = only_run_dir(tmp_path)
    assert sorted(p.name for p in run.glob("samples_epoch_*.png")) == ["samples_epoch_257.png"]


def test_a_resume_redraws_a_lost_last_grid_and_retests_a_stale_test(finished_run, tmp_path, capsys):
    """Issue 25 #6 and #1, in-process (real signals and kills: tests/end_to_end/test_hardening3_runs.py). A kill after
    the last checkpoint but before its grid and test leaves the run without them: the resume draws the very grid
    and tests. A metrics.json of an earlier epoch (an extension whose test was interrupted) is not "finished"."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    grid = (run / "samples_epoch_002.png").read_bytes()
    tested = json.loads((run / "metrics.json").read_text())
    (run / "samples_epoch_002.png").unlink()
    (run / "metrics.json").write_text(json.dumps({**tested, "epochs": 1}))  # a test of epoch 1, not of the last
    capsys.readouterr()
    metrics = train_torch.main(train_torch.parse_args(["--resume", str(run)]))
    assert "all 2 epochs trained: testing" in capsys.readouterr().out
    assert (run / "samples_epoch_002.png").read_bytes() == grid
    assert metrics["epochs"] == 2 and metrics["test_bpd"] == tested["test_bpd"]
    train_torch.main(train_torch.parse_args(["--resume", str(run)]))
    assert "already finished its 2 epochs and was tested" in capsys.readouterr().out
