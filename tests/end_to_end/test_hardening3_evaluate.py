"""The third adversarial round (issue 25) on part1/evaluate.py: a chunk too large for memory (a real failed allocation,
under a real address-space limit), a checkpoint whose `epoch` is text, SIGTERM and SIGINT inside one long decoder call
(real signals to a real process), and the record training and evaluate.py both write, each saying which evaluation it
is and never replacing another silently. The unit checks of each live with their modules: tests/vae/test_evaluation.py
(the checkpoint's fields, write_evaluation, allocation_failure) and tests/vae/test_estimates.py (the record, its line).
"""
import fcntl
import json
import os
import pty
import re
import resource
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch

import evaluate
import train_torch
from cli_contract import Case, changed, edit_checkpoint, params, run_case, snapshot
from conftest import PART1, REPO_ROOT, SMALL, only_run_dir
from dgmkit.runs.checkpoints import save_checkpoint
from dgmkit.runs.finished import load_finished_run
from dgmkit.vae.evaluation import REPLACED_KEYS
from dgmkit.vae.model import VAE

EVALUATE = PART1 / "evaluate.py"
MICRO_TEST_IMAGES = 20  # conftest's micro_data: its test split is one batch


def untrained_run(folder, num_filters):
    """A run folder holding only checkpoints/best.pt, an untrained z_dim 2 VAE with `num_filters` (evaluate.py reads
    no other file of a run)."""
    torch.manual_seed(0)
    (folder / "checkpoints").mkdir(parents=True)
    state = {"model": VAE(num_filters, 2, 1e-3).state_dict(), "args": {"z_dim": 2, "num_filters": num_filters},
             "epoch": 1}
    save_checkpoint(folder / "checkpoints" / "best.pt", state)
    return folder


def child_env():
    return dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def error_lines(text):
    """The non-empty lines of a child's stderr, without the progress bar's redraws (a terminal's \\r and erase-line)."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    return [line for line in re.split(r"[\r\n]+", text) if line.strip() and "evaluating (K=" not in line]


# ---- cause 11: a chunk too large for memory ----------------------------------------------------------------------

@pytest.mark.slow
def test_a_chunk_too_large_for_memory_is_one_line_naming_the_flags(micro_data, tmp_path):
    """Before: torch's CPU allocator raised a RuntimeError ("DefaultCPUAllocator: can't allocate memory") from the
    decoder, a traceback and exit 1, where the README promises one line and exit 2. The child runs under an
    address-space limit (RLIMIT_AS) with room for torch and little more, and its first decoder call asks for about
    four times the limit (images x K latents of 256 floats in the decoder's first layer): a real failed allocation,
    refused before any page is touched, so the machine's memory is never at risk."""
    run = untrained_run(tmp_path / "run", 8)
    status = Path("/proc/self/status").read_text()
    limit = int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024 + 2 * 2 ** 30  # this process has torch
    k = -(-4 * limit // (MICRO_TEST_IMAGES * 256 * 4))  # one call: 20 k latents x 256 floats >= 4 x the limit
    before = snapshot(tmp_path)
    result = subprocess.run(
        [sys.executable, str(EVALUATE), str(run), "--data_dir", str(micro_data), "--device", "cpu",
         "--iw_samples", str(k), "--chunk_size", str(MICRO_TEST_IMAGES * k)], cwd=REPO_ROOT, env=child_env(),
        capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("evaluate.py: error: out of memory while evaluating (could not allocate "), lines
    latents = MICRO_TEST_IMAGES * k
    for text in (f"one decoder call takes up to {latents:,} latents (batches of 20 images", f"--chunk_size {latents}",
                 "lower --chunk_size (default 2048) or --batch_size", "nothing was written"):
        assert text in lines[0], (text, lines[0])
    assert changed(before, snapshot(tmp_path)) == [] and result.stdout == ""


# ---- cause 12: a checkpoint whose epoch is text ------------------------------------------------------------------

def set_epoch(value):
    return lambda c: edit_checkpoint(c.run / "checkpoints" / "best.pt", lambda state: state.update(epoch=value))


EPOCH_CASES = [Case(f"epoch-{name}", lambda c: [c.run, "--device", "cpu", "--iw_samples", "2"], 2,
                    ("{run}/checkpoints/best.pt: its 'epoch' is", "not a whole number of epochs",
                     "the checkpoint is damaged"), setup=set_epoch(value))
               for name, value in (("text", "three"), ("negative", -1), ("float", 2.5))]


@pytest.mark.parametrize("case", params(EPOCH_CASES))
def test_a_checkpoint_whose_epoch_is_not_a_number_of_epochs_is_one_line(case, run_ctx, capsys):
    """Before: int("three") for the TensorBoard step, a ValueError traceback (and -1 or 2.5 went into the record).
    load_model checks every checkpoint field evaluate.py reads: one line naming the file, exit 2, nothing written."""
    run_case(case, evaluate.cli, "evaluate.py", run_ctx, capsys)


# ---- cause 13: SIGTERM and SIGINT inside one long decoder call ---------------------------------------------------

@pytest.fixture(scope="module")
def heavy_run(tmp_path_factory):
    """An untrained VAE with 512 filters: its first transposed conv over a chunk of 3,000 latents is one C call of
    about 16 s on an idle CPU core (more on a busy one), holding about 600 MB."""
    return untrained_run(tmp_path_factory.mktemp("heavy") / "run", 512)


def read_until(fd, process, marker, timeout):
    """What a child wrote to the terminal `fd` until `marker` appears (fails if it ends or the time runs out)."""
    seen, deadline = "", time.monotonic() + timeout
    while marker not in seen:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {marker!r} (exit {process.poll()}): {seen[-3000:]}")
        if select.select([fd], [], [], 0.05)[0]:
            seen += os.read(fd, 65536).decode(errors="replace")
    return seen


def read_rest(fd):
    rest = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        rest += chunk
    return rest.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_inside_a_long_decoder_call_stops_evaluate_promptly(heavy_run, micro_data, signum):
    """Before: evaluate.py went through run_cli, whose handler raises Terminated, but Python runs a handler only
    between bytecodes, so a signal inside one long C call (a decoder over a large chunk) waited for the call to return:
    a minute or more (issue 25 saw 60 s). Now a watcher thread ends the process within about a second with the same
    line. stderr is a terminal, so the progress bar shows when the computation starts; the signal comes 2 s later,
    inside the first chunk's first transposed conv. Nothing is written before the computation ends, and the line
    says so truthfully: the run folder is unchanged."""
    master, child_side = pty.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 0 columns: tqdm draws nothing
    before = snapshot(heavy_run)
    process = subprocess.Popen(
        [sys.executable, str(EVALUATE), str(heavy_run), "--data_dir", str(micro_data), "--device", "cpu",
         "--batch_size", "1", "--chunk_size", "3000", "--iw_samples", "100000000"], cwd=REPO_ROOT, env=child_env(),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=child_side)
    os.close(child_side)
    try:
        err = read_until(master, process, "evaluating (K=", timeout=240)
        time.sleep(2)  # past the one image's ELBO and the decoder's linear layer: inside the first conv
        sent = time.monotonic()
        process.send_signal(signum)
        process.wait(timeout=300)
        took = time.monotonic() - sent
        err += read_rest(master)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    name, status = signal.Signals(signum).name, 128 + signum
    assert process.returncode == status, (took, err[-3000:])
    assert error_lines(err) == [f"evaluate.py: stopped by {name}; eval_test.json was not (re)written; nothing was "
                                "written"], err[-3000:]
    assert took < 8, f"still running {took:.1f} s after {name}"
    assert changed(before, snapshot(heavy_run)) == [] and process.stdout.read() == b""


# ---- causes 20 and 23: one record, two writers, each saying which evaluation it is -------------------------------

def test_training_and_evaluate_write_one_record_and_say_which_is_which(mnist_8bit, tmp_path, capsys):
    """Before: training's eval_test.json lacked dataset and bits (cause 20), and one checkpoint had three unlabelled
    test figures, evaluate.py overwriting training's record silently (cause 23). Now: training prints its record's
    line (checkpoint, epoch, data, writer, seed, batch, chunk, K) and a last line whose test bpd is its own ELBO pass;
    evaluate.py writes the same fields, prints its own line and says what it replaced, which the new file keeps
    under "replaced"; the report's reader (runs/finished.py) takes both records."""
    train_torch.main(train_torch.parse_args(["--data_dir", str(mnist_8bit), "--log_dir", str(tmp_path), *SMALL,
                                             "--dataset", "mnist", "--bits", "1", "--final_iw_samples", "2"]))
    run = only_run_dir(tmp_path)
    trained, metrics = (json.loads((run / name).read_text()) for name in ("eval_test.json", "metrics.json"))
    out = capsys.readouterr().out
    assert (f"wrote eval_test.json: test split, 20 images, checkpoints/best.pt (epoch {trained['epoch']}), mnist "
            f"1-bit, by train_torch.py, seed 42, batch 512, chunk 2048 | ELBO (one z per image) {trained['bpd']:.4f}"
            in out), out
    assert (f"test bpd {metrics['test_bpd']:.4f} (negative ELBO, training's own pass: one z per image) | "
            f"importance-weighted (K=2, eval_test.json) {trained['iw_bpd']:.4f}" in out), out
    assert (trained["dataset"], trained["bits"], trained["written_by"]) == ("mnist", 1, "train_torch.py")
    load_finished_run(run)

    result = evaluate.main(evaluate.parse_args([str(run), "--iw_samples", "3", "--device", "cpu",
                                                "--data_dir", str(mnist_8bit)]))
    out = capsys.readouterr().out
    evaluated = json.loads((run / "eval_test.json").read_text())
    assert evaluated == result and set(evaluated) == set(trained) | {"replaced"}
    assert (evaluated["dataset"], evaluated["bits"], evaluated["written_by"]) == ("mnist", 1, "evaluate.py")
    assert evaluated["replaced"] == [{key: trained[key] for key in REPLACED_KEYS}]
    assert (f"test split, 20 images, checkpoints/best.pt (epoch {trained['epoch']}), mnist 1-bit, by evaluate.py, "
            f"seed 0, batch 128, chunk 2048 | ELBO (one z per image) {evaluated['bpd']:.4f}") in out, out
    assert (f"wrote {run / 'eval_test.json'}, replacing the earlier one: train_torch.py's evaluation of "
            f"checkpoints/best.pt (epoch {trained['epoch']}), seed 42, K=2: ELBO {trained['bpd']:.4f}, IW "
            f"{trained['iw_bpd']:.4f} bpd (kept in the new file under 'replaced')") in out, out
    load_finished_run(run)
