"""The study table from a small fixture of sweep run folders, against means, sds and paired SEs by hand."""
import json
import math
import sys

import pytest
from matplotlib.image import imread

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "report"))
import make_figures  # noqa: E402
import study  # noqa: E402

# name: (test_bpd, test_iw_bpd, test_kl_nats, active units, seconds/epoch, per-image IW bpd of 3 test images)
RUNS = {
    "elbo-k1_none-l0_s42": (1.5, 1.4, 30.0, 20, 2.0, [1.0, 2.0, 1.2]),
    "elbo-k1_none-l0_s43": (1.7, 1.5, 32.0, 19, 2.2, [1.5, 1.5, 1.5]),
    "iwae-k5_none-l0_s42": (1.6, 1.3, 40.0, 12, 6.0, [0.9, 1.9, 1.2]),
    "iwae-k5_none-l0_s43": (1.8, 1.3, 44.0, 14, 6.4, [1.4, 1.2, 1.3]),
    "planar-k1_none-l0_s42": (9.9, 9.9, 9.9, 9, 9.9, [9.9, 9.9, 9.9]),  # no metrics.json: unfinished, left out
}
MACHINE = {"device_name": "Test CPU", "cpus": 2, "threads": 1, "torch": "2.15.0", "cuda": None}


@pytest.fixture
def sweep(tmp_path):
    for name, (bpd, iw, kl, units, seconds, per_image) in RUNS.items():
        run = tmp_path / "sweep" / name
        run.mkdir(parents=True)
        (run / "args.json").write_text(json.dumps({"data_dir": str(tmp_path / "nodata"), "z_dim": 20}))
        history = [{"epoch": e, "seconds": s, "val_bpd": bpd + 1 / e} for e, s in ((1, seconds), (2, seconds),
                                                                                    (3, 100.0))]  # one stalled epoch
        (run / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        (run / "eval_test.json").write_text(json.dumps({"per_image_iw_bpd": per_image}))
        if not name.startswith("planar"):
            (run / "metrics.json").write_text(json.dumps({
                "test_bpd": bpd, "test_iw_bpd": iw, "test_kl_nats": kl, "test_active_units": units,
                "seconds_per_epoch": seconds, "iw_samples": 1000,
                **({"machine": MACHINE} if name.endswith("s42") else {})}))  # s43: a run from before the field
    return tmp_path / "sweep"


def test_rows_by_hand(sweep):
    rows = {row["config"]: row for row in study.study_rows(study.load_study(sweep))}
    assert list(rows) == ["elbo-k1_none-l0", "iwae-k5_none-l0"]  # the baseline first; unfinished runs left out
    base, iwae = rows["elbo-k1_none-l0"], rows["iwae-k5_none-l0"]
    assert base["seeds"] == [42, 43]
    assert base["test_bpd"] == pytest.approx((1.6, math.sqrt(0.02)))  # sd of 1.5, 1.7 (n - 1)
    assert base["test_iw_bpd"] == pytest.approx((1.45, math.sqrt(0.005)))
    assert base["gap"] == pytest.approx((0.15, math.sqrt(0.005)))  # gaps 0.1 and 0.2
    assert iwae["test_kl_nats"] == pytest.approx((42.0, math.sqrt(8)))
    assert iwae["test_active_units"] == pytest.approx((13.0, math.sqrt(2)))
    assert iwae["test_iw_bpd"] == pytest.approx((1.3, 0.0))
    assert iwae["median_epoch_seconds"] == pytest.approx((6.2, math.sqrt(0.08)))  # medians 6.0, 6.4: the stall ignored
    # Paired: seed 42 diffs -0.1, -0.1, 0 (mean -1/15, SE 0.1/sqrt(3)/sqrt(3)); seed 43 diffs -0.1, -0.3, -0.2
    # (mean -0.2, SE 0.1/sqrt(3)); Δ = mean of the two, SE = sqrt(SE42² + SE43²) / 2.
    se42, se43 = math.sqrt(1 / 300) / math.sqrt(3), 0.1 / math.sqrt(3)
    delta, se, seeds = iwae["delta"]
    assert delta == pytest.approx((-1 / 15 - 0.2) / 2) and se == pytest.approx(math.hypot(se42, se43) / 2)
    assert seeds == 2 and base["delta"] == (None, None, 0)


def test_make_figures_writes_the_study(sweep, tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# R\n\n<!-- study:begin -->\nold\n<!-- study:end -->\n\nafter\n")
    out = tmp_path / "figures"
    make_figures.main(make_figures.parse_args(["--study", str(sweep), "--out_dir", str(out), "--report", str(report)]))
    text = report.read_text()
    assert "old" not in text and text.endswith("<!-- study:end -->\n\nafter\n")
    assert "| ELBO | 42, 43 | 1.6000 ± 0.1414 | 1.4500 ± 0.0707 | 0.1500 ± 0.0707 | 31.00 ± 1.41 |" in text
    assert "| IWAE K=5 | 42, 43 | 1.7000 ± 0.1414 | 1.3000 ± 0.0000 |" in text
    assert "-0.1333 ± 0.0333 |" in text and "K = 1000" in text
    assert ("Machine (each run's metrics.json): Test CPU, 2 CPUs usable, 1 torch thread, torch 2.15.0: 2 runs; "
            "not recorded: 2 runs (made before runs recorded their machine).") in text
    assert (out / "study.md").read_text().count("| --- |") == text.count("| --- |")
    assert imread(out / "study_val_bpd.png").shape[0] > 300


def test_study_errors_write_nothing(sweep, tmp_path, capsys):
    report = tmp_path / "report.md"
    report.write_text("# no study markers\n")
    with pytest.raises(SystemExit) as info:
        make_figures.cli(["--study", str(sweep), "--out_dir", str(tmp_path / "figures"), "--report", str(report)])
    assert info.value.code == 2 and "study:begin" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists() and report.read_text() == "# no study markers\n"
