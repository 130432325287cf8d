"""report/study.py: the study from a small fixture of sweep run folders, against means, sds, seed-level
t-intervals and image-level SEs computed by hand; its tables and figures through make_figures.py --study."""
import json
import math
from statistics import mean

import pytest
from matplotlib.image import imread

import make_figures
import study

from .hand_quantiles import T1

# name: (test_bpd, test_kl_nats, active units, seconds/epoch, per-image IW bpd of 3 test images); the run's
# test_iw_bpd is the mean of its per-image values, as evaluate.py writes them.
RUNS = {
    "elbo-k1_none-l0_s42": (1.5, 30.0, 20, 2.0, [1.0, 2.0, 1.2]),
    "elbo-k1_none-l0_s43": (1.7, 32.0, 19, 2.2, [1.5, 1.5, 1.5]),
    "iwae-k5_none-l0_s42": (1.6, 40.0, 12, 6.0, [0.9, 1.9, 1.2]),
    "iwae-k5_none-l0_s43": (1.8, 44.0, 14, 6.4, [1.4, 1.2, 1.3]),
    # per-image differences from the baseline: seed 42 -0.08, -0.12, -0.10; seed 43 -0.11, -0.10, -0.12
    "elbo-k1_planar-l10_s42": (1.45, 29.0, 20, 2.5, [0.92, 1.88, 1.10]),
    "elbo-k1_planar-l10_s43": (1.62, 31.0, 20, 2.7, [1.39, 1.40, 1.38]),
    "planar-k1_none-l0_s42": (9.9, 9.9, 9, 9.9, [9.9, 9.9, 9.9]),  # no metrics.json: unfinished, left out
}
MACHINE = {"device_name": "Test CPU", "cpus": 2, "threads": 1, "torch": "2.15.0", "cuda": None}


@pytest.fixture
def sweep(tmp_path):
    for name, (bpd, kl, units, seconds, per_image) in RUNS.items():
        run = tmp_path / "sweep" / name
        run.mkdir(parents=True)
        precision = {"precision": "auto", "auto_choices": {"precision": "fp32"}} if "s42" in name else \
            {"precision": "bf16"}
        (run / "args.json").write_text(json.dumps({"data_dir": str(tmp_path / "nodata"), "z_dim": 20, **precision}))
        history = [{"epoch": e, "seconds": s, "val_bpd": bpd + 1 / e} for e, s in ((1, seconds), (2, seconds),
                                                                                    (3, 100.0))]  # one stalled epoch
        (run / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        (run / "eval_test.json").write_text(json.dumps({"per_image_iw_bpd": per_image}))
        if not name.startswith("planar"):
            (run / "metrics.json").write_text(json.dumps({
                "test_bpd": bpd, "test_iw_bpd": mean(per_image), "test_kl_nats": kl, "test_active_units": units,
                "seconds_per_epoch": seconds, "iw_samples": 1000, "epochs": 3,
                **({"machine": MACHINE} if name.endswith("s42") else {})}))  # s43: a run from before the field
    return tmp_path / "sweep"


def test_rows_by_hand(sweep):
    rows = {row["config"]: row for row in study.study_rows(study.load_study(sweep))}
    assert list(rows) == ["elbo-k1_none-l0", "elbo-k1_planar-l10", "iwae-k5_none-l0"]  # baseline first; unfinished out
    base, iwae = rows["elbo-k1_none-l0"], rows["iwae-k5_none-l0"]
    assert base["seeds"] == [42, 43]
    assert base["test_bpd"] == pytest.approx((1.6, math.sqrt(0.02)))  # sd of 1.5, 1.7 (n - 1)
    assert base["test_iw_bpd"] == pytest.approx((1.45, math.sqrt(0.005)))  # runs 1.4 and 1.5
    assert base["gap"] == pytest.approx((0.15, math.sqrt(0.005)))  # gaps 0.1 and 0.2
    assert iwae["test_kl_nats"] == pytest.approx((42.0, math.sqrt(8)))
    assert iwae["test_active_units"] == pytest.approx((13.0, math.sqrt(2)))
    assert iwae["median_epoch_seconds"] == pytest.approx((6.2, math.sqrt(0.08)))  # medians 6.0, 6.4: the stall ignored
    # IWAE - ELBO: seed 42 per-image diffs -0.1, -0.1, 0 (Δ -1/15), seed 43 -0.1, -0.3, -0.2 (Δ -0.2).
    delta = iwae["delta"]
    assert delta["deltas"] == pytest.approx([-1 / 15, -0.2]) and delta["mean"] == pytest.approx(-2 / 15)
    seed_se = math.sqrt((2 / 15) ** 2 / 2) / math.sqrt(2)  # sd of the two Δ_s over sqrt(2) = 1/15
    assert delta["seed_se"] == pytest.approx(seed_se)
    assert delta["interval"] == pytest.approx((-2 / 15 - T1 * seed_se, -2 / 15 + T1 * seed_se))
    # Image level: SE_42 = sd(-0.1, -0.1, 0) / sqrt(3), SE_43 = 0.1 / sqrt(3); sqrt(SE_42² + SE_43²) / 2.
    se42, se43 = math.sqrt(1 / 300) / math.sqrt(3), 0.1 / math.sqrt(3)
    assert delta["image_se"] == pytest.approx(math.hypot(se42, se43) / 2)
    assert delta["verdict"] == "no detectable difference"  # 2 image SEs would have called it
    planar = rows["elbo-k1_planar-l10"]["delta"]  # Δ_s -0.10 and -0.11: consistent, the interval excludes 0
    assert planar["mean"] == pytest.approx(-0.105) and planar["seed_se"] == pytest.approx(0.005)
    assert planar["interval"][1] == pytest.approx(-0.105 + T1 * 0.005) and planar["interval"][1] < 0
    assert planar["verdict"] == "lower"
    assert base["delta"] is None


def test_comparisons_cover_every_quantity_and_the_extra_pairs(sweep):
    pairs = study.comparisons(study.load_study(sweep))
    assert [(c, r) for c, r, _ in pairs] == [("elbo-k1_planar-l10", "elbo-k1_none-l0"),
                                             ("iwae-k5_none-l0", "elbo-k1_none-l0"),
                                             ("iwae-k5_none-l0", "elbo-k1_planar-l10")]
    iwae_vs_planar = pairs[2][2]
    # test ELBO bpd: 1.6 - 1.45 and 1.8 - 1.62; KL: 40 - 29 and 44 - 31; gap = test bpd - test IW bpd per run.
    assert iwae_vs_planar["test_bpd"]["deltas"] == pytest.approx([0.15, 0.18])
    assert iwae_vs_planar["test_kl_nats"]["mean"] == pytest.approx(12.0)
    assert iwae_vs_planar["gap"]["deltas"] == pytest.approx([(1.6 - 4 / 3) - (1.45 - 3.9 / 3),
                                                             (1.8 - 1.3) - (1.62 - 4.17 / 3)])
    assert iwae_vs_planar["test_kl_nats"]["image_se"] is None  # per-image values exist only for the IW bound


def test_make_figures_writes_the_study(sweep, tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# R\n\n<!-- study:begin -->\nold\n<!-- study:end -->\n\nafter\n")
    out = tmp_path / "figures"
    make_figures.main(make_figures.parse_args(["--study", str(sweep), "--out_dir", str(out), "--report", str(report)]))
    text = report.read_text()
    assert "\nold\n" not in text and text.endswith("<!-- study:end -->\n\nafter\n")
    assert "| ELBO | 42, 43 | 1.6000 ± 0.1414 | 1.4500 ± 0.0707 | 0.1500 ± 0.0707 | 31.00 ± 1.41 |" in text
    half = T1 * 0.005
    assert ("| ELBO, planar flow L=10 | 42, 43 | 1.5350 ± 0.1202 | 1.3450 ± 0.0636 |") in text  # IW 1.30, 1.39
    assert f"| **-0.1050 [{-0.105 - half:+.4f}, {-0.105 + half:+.4f}]** | 0.0050 |" in text
    assert f"-0.1333 [{-2 / 15 - T1 / 15:+.4f}, {-2 / 15 + T1 / 15:+.4f}] | 0.0667 | 0.0333 | no detectable " \
           "difference |" in text
    assert "| IWAE K=5 − ELBO, planar flow L=10 | 42, 43 | " in text and "K = 1000" in text
    assert ("Machine (each run's metrics.json): Test CPU, 2 CPUs usable, 1 torch thread, torch 2.15.0: 3 runs; "
            "not recorded: 3 runs (made before runs recorded their machine). Precision: bf16: 3 runs, "
            "fp32: 3 runs.") in text
    assert (out / "study.md").read_text().count("| --- |") == text.count("| --- |")
    assert imread(out / "study_val_bpd.png").shape[0] > 300
    assert imread(out / "study_differences.png").shape[0] > 200


def test_study_errors_write_nothing(sweep, tmp_path, capsys):
    report = tmp_path / "report.md"
    report.write_text("# no study markers\n")
    with pytest.raises(SystemExit) as info:
        make_figures.cli(["--study", str(sweep), "--out_dir", str(tmp_path / "figures"), "--report", str(report)])
    assert info.value.code == 2 and "study:begin" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists() and report.read_text() == "# no study markers\n"


@pytest.mark.parametrize("changed", [{"dataset": "mnist"}, {"bits": 1}], ids=["dataset", "bits"])
def test_runs_on_other_data_are_refused_not_averaged_into_a_row(sweep, tmp_path, capsys, changed):
    """One seed of the ELBO baseline on MNIST (or at 1 bit) among FashionMNIST runs recorded without dataset and bits
    (the VAE's defaults then: 4-bit FashionMNIST): one line naming both runs' data, exit 2, nothing written."""
    args = sweep / "elbo-k1_none-l0_s43" / "args.json"
    args.write_text(json.dumps({**json.loads(args.read_text()), **changed}))
    report = tmp_path / "report.md"
    report.write_text("<!-- study:begin -->\n<!-- study:end -->\n")
    with pytest.raises(SystemExit) as info:
        make_figures.cli(["--study", str(sweep), "--out_dir", str(tmp_path / "figures"), "--report", str(report)])
    err = capsys.readouterr().err
    other = "binary FashionMNIST" if "bits" in changed else "4-bit MNIST"
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"make_figures.py: error: --study {sweep}: `elbo-k1_none-l0_s42` is on 4-bit FashionMNIST "
                          f"but `elbo-k1_none-l0_s43` on {other} ")
    assert not (tmp_path / "figures").exists() and report.read_text() == "<!-- study:begin -->\n<!-- study:end -->\n"
