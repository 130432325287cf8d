"""The default path pinned: a 2-epoch run of the default model and loss on generated data must give the
numbers the code gave when tests/fixtures/pinned_default.json was written (its `produced_by` says when and
how; `python tests/end_to_end/test_default_pinned.py` rewrites it with the code as it is), so a refactor of data,
model, loss or loop that changes what the default computes fails here, and says so. The tolerance (relative 1e-4)
absorbs other CPUs' kernels; a changed formula moves these numbers by far more."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":  # run as a script: the tests' helpers and part1/ on the path, as pytest.ini puts them
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2] / "part1")]

import pytest  # noqa: E402
import torch  # noqa: E402

import train_torch  # noqa: E402
from conftest import generated_data, only_run_dir  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pinned_default.json"
REPIN = "python tests/end_to_end/test_default_pinned.py"
TOLERANCE = 1e-4  # relative
FLAGS = ["--epochs", "2", "--batch_size", "64", "--sample_epochs", "--final_iw_samples", "4", "--device", "cpu",
         "--precision", "fp32", "--compile", "off", "--no-channels_last", "--no-progress_bar"]
METRICS = ("test_bpd", "test_rec_nats", "test_kl_nats", "test_iw_bpd", "best_val_bpd")


def pinned_run(tmp):
    """(history without the seconds, the metrics of METRICS) of the pinned run, in folder tmp, one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = generated_data(Path(tmp) / "data", 300, 60, seed=0)
        metrics = train_torch.main(train_torch.parse_args(["--data_dir", str(data), "--log_dir",
                                                           str(Path(tmp) / "logs"), *FLAGS]))
    finally:
        torch.set_num_threads(threads)
    history = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
               for line in (only_run_dir(Path(tmp) / "logs") / "history.jsonl").read_text().splitlines()]
    return history, {k: metrics[k] for k in METRICS}


def differences(history, metrics, pinned):
    """Where the run's numbers leave the pinned ones beyond the tolerance: 'epoch 2 val_bpd 3.6712 (pinned 3.6676)'."""
    if [sorted(h) for h in history] != [sorted(h) for h in pinned["history"]]:
        return [f"history holds {[sorted(h) for h in history]}, pinned {[sorted(h) for h in pinned['history']]}"]
    found = []
    for where, ours, theirs in [*((f"epoch {h['epoch']}", h, p) for h, p in zip(history, pinned["history"])),
                                ("metrics.json", metrics, pinned["metrics"])]:
        found += [f"{where} {key} {ours.get(key)!r} (pinned {value!r})" for key, value in theirs.items()
                  if ours.get(key) != pytest.approx(value, rel=TOLERANCE)]
    return found


def test_a_default_run_reproduces_the_pinned_numbers(tmp_path):
    pinned = json.loads(FIXTURE.read_text())
    history, metrics = pinned_run(tmp_path)
    moved = differences(history, metrics, pinned)
    assert not moved, (
        f"the default run no longer gives the numbers pinned in tests/fixtures/{FIXTURE.name} "
        f"({pinned['produced_by']}): "
        f"{'; '.join(moved[:5])}{'; ...' if len(moved) > 5 else ''}. If the change is meant to alter what the default "
        f"computes (its model, loss, data or loop), re-pin: `{REPIN}` rewrites the fixture with the code as it is; "
        "commit it with the change. If not, the change altered the default path by mistake.")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        history, metrics = pinned_run(tmp)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    FIXTURE.write_text(json.dumps({
        "produced_by": f"{REPIN} at commit {commit} (torch {torch.__version__}): "
                       "generated_data(300, 60, seed=0), FLAGS, one torch thread",
        "flags": FLAGS, "history": history, "metrics": metrics}, indent=2) + "\n")
    print(f"wrote {FIXTURE}")
