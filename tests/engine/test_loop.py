"""dgmkit/engine/loop.py (fit, through the VAE's train_torch.main): resuming a finished run changes nothing and
returns its metrics, and the last epoch always gets a sample grid."""
import json

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
