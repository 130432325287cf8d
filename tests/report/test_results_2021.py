"""report/results_2021.py through make_figures.py RUN_DIR [RUN_DIR_Z2] on fake run folders: figures, results.md
from the JSON, report markers (errors: tests/test_bad_inputs_runs.py)."""
import json
import shutil

import pytest
import torch
import torchvision
from matplotlib.image import imread

import make_figures
import results_2021
from conftest import REPO_ROOT
from dgmkit.vae.config import parse_train_args as train_parse_args

REPORT_TEXT = """# Report

Text before.

<!-- results:begin -->
an old table that must disappear
<!-- results:end -->

Text after.
"""


def save_grid(path, num_images, nrow, seed):
    """A make_grid PNG of random 28x28 images, laid out like train_torch.py's grids."""
    images = torch.rand(num_images, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    torchvision.utils.save_image(torchvision.utils.make_grid(images, nrow=nrow), path)


def fake_run(root, name, z_dim, metrics, sample_epochs=(0, 1, 3)):
    """A run folder as train_torch.py writes it: args.json, a 3-epoch history.jsonl, metrics.json, PNGs."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    args = train_parse_args(["--z_dim", str(z_dim), "--epochs", "3", "--data_dir", str(root / "data"),
                             "--sample_epochs", *map(str, sample_epochs)]).to_dict()  # as args.json holds them
    (run_dir / "args.json").write_text(json.dumps(args, indent=2))
    with open(run_dir / "history.jsonl", "w") as f:
        for epoch, (train_bpd, val_bpd) in enumerate([(3.9, 3.4), (2.5, 2.3), (1.9, 1.8)], start=1):
            record = {"epoch": epoch, "seconds": 1.5}
            for split, bpd in (("train", train_bpd), ("val", val_bpd)):
                record.update({f"{split}_bpd": bpd, f"{split}_rec_nats": bpd * 543 - 10, f"{split}_kl_nats": 10.0})
            f.write(json.dumps(record) + "\n")
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    for epoch in sample_epochs:
        save_grid(run_dir / f"samples_epoch_{epoch:03d}.png", 64, 8, seed=epoch)
    if z_dim == 2:
        save_grid(run_dir / "vae_manifold.png", 400, 20, seed=99)
    return run_dir


def metrics_of(test_bpd, best_val_bpd, **extra):
    return {"test_bpd": test_bpd, "test_rec_nats": 654.321, "test_kl_nats": 12.345, "best_epoch": 3,
            "best_val_bpd": best_val_bpd, "epochs": 3, "seconds_per_epoch": 1.5, "wall_time_s": 7.25,
            "device": "cpu", **extra}


@pytest.fixture(scope="module")
def run_templates(tmp_path_factory):
    """The two fake run folders, written once; tests get copies (some tests change them)."""
    root = tmp_path_factory.mktemp("runs")
    fake_run(root, "2026-01-01_00-00-00_z20", 20, metrics_of(1.23456, 1.11111))
    fake_run(root, "2026-01-01_00-01-00_z2", 2, metrics_of(2.71828, 2.5, test_iw_bpd=2.61803, iw_samples=100))
    return root


@pytest.fixture
def runs(run_templates, tmp_path):
    shutil.copytree(run_templates, tmp_path / "runs")
    report = tmp_path / "report.md"
    report.write_text(REPORT_TEXT)
    return (tmp_path / "runs" / "2026-01-01_00-00-00_z20", tmp_path / "runs" / "2026-01-01_00-01-00_z2", report,
            tmp_path / "figures")


def run_main(*argv):
    return make_figures.main(make_figures.parse_args([str(a) for a in argv]))


def test_figures_table_and_report(runs):
    main_run, z2_run, report, out = runs
    run_main(main_run, z2_run, "--out_dir", out, "--report", report)

    for name in ("bpd_curves.png", "samples.png", "manifold.png", "results.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # The figures are real PNGs of a sensible size.
    for name in ("bpd_curves.png", "samples.png", "manifold.png"):
        image = imread(out / name)  # [H, W, channels]
        assert image.shape[0] > 300 and image.shape[1] > 300, (name, image.shape)

    results = (out / "results.md").read_text()
    for text in ("1.2346", "1.1111", "2.7183", "2.6180", "654.32", "12.35", "2026-01-01_00-00-00_z20",
                 "2026-01-01_00-01-00_z2", "importance-weighted", "2.6180 (100)", "1.50 s", "7.25 s", "cpu",
                 "666.67"):
        assert text in results, text
    # The command lines are rebuilt from args.json: flags that differ from the defaults.
    assert "`python part1/train_torch.py --z_dim 2 --epochs 3 --data_dir " in results
    assert "--sample_epochs 0 1 3" in results
    assert "first below 2.0 after epoch 3" in results

    text = report.read_text()
    assert "an old table that must disappear" not in text
    assert text.startswith("# Report\n\nText before.\n\n<!-- results:begin -->\n")
    assert text.endswith("<!-- results:end -->\n\nText after.\n")
    assert "1.2346" in text and "2.6180" in text
    block = text[text.index(results_2021.MARKERS[0]):text.index(results_2021.MARKERS[1])]
    assert block.count("| --- |") == results.count("| --- |")

    # Updating again gives the same report (the block is replaced, not appended to).
    run_main(main_run, z2_run, "--out_dir", out, "--report", report)
    assert report.read_text() == text


def test_optional_inputs(runs):
    """No z_dim 2 run: no manifold.png (a stale one is removed); eval_test.json keys appear when present."""
    main_run, _, report, out = runs
    out.mkdir()
    (out / "manifold.png").write_bytes(b"stale")
    # Shaped like part1/evaluate.py's output (the run folder's schema).
    evaluation = {"checkpoint": "x/checkpoints/best.pt", "epoch": 3, "split": "test", "data_dir": "nowhere",
                  "seed": 0, "device": "cpu", "num_images": 509, "iw_samples": 100, "wall_time_s": 3.0,
                  "bpd": 1.23999, "bpd_se": 0.00456, "nelbo_nats": 672.5, "nelbo_nats_se": 2.5,
                  "iw_bpd": 1.19871, "iw_bpd_se": 0.00432, "iw_nats": 650.1, "iw_nats_se": 2.3,
                  "gap_bpd": 0.04128, "gap_bpd_se": 0.001, "rec_nats": 660.0, "kl_nats": 12.5, "active_units": 7,
                  "per_class": {"T-shirt/top": {"count": 51, "bpd": 1.31, "bpd_se": 0.02, "iw_bpd": 1.29,
                                                "iw_bpd_se": 0.02}},
                  "latents": {"kl_per_dim": [0.5, 0.25], "z_dim": 2, "active_threshold": 0.01}}
    (main_run / "eval_test.json").write_text(json.dumps(evaluation))
    save_grid(main_run / "reconstructions_test.png", 16, 8, seed=5)
    (out / "interpolations.png").write_bytes(b"stale")
    run_main(main_run, "--out_dir", out, "--report", report)
    assert not (out / "manifold.png").exists() and not (out / "interpolations.png").exists()
    assert (out / "reconstructions.png").read_bytes() == (main_run / "reconstructions_test.png").read_bytes()
    results = (out / "results.md").read_text()
    assert "eval_test.json" in results
    assert "| negative ELBO (one z) | 1.2400 ± 0.0046 | 672.50 ± 2.50 |" in results
    assert "| negative IW bound (K = 100) | 1.1987 ± 0.0043 | 650.10 ± 2.30 |" in results
    assert "| gap (paired) | 0.0413 ± 0.0010 | – |" in results
    assert "| T-shirt/top | 51 | 1.3100 ± 0.0200 | 1.2900 ± 0.0200 |" in results
    assert "active units: 7 of 2" in results and "0.5000, 0.2500" in results


TITLED = "# Assignment 3 report: Transformers, and a VAE on 4-bit FashionMNIST\n\n" + REPORT_TEXT.split("\n", 1)[1]


def set_data(run_dir, dataset, bits):
    args = json.loads((run_dir / "args.json").read_text())
    (run_dir / "args.json").write_text(json.dumps({**args, "dataset": dataset, "bits": bits}))


def test_the_committed_reports_title_states_its_data():
    text = (REPO_ROOT / "report" / "report.md").read_text()
    assert results_2021.stated_data(text) == ("fashion_mnist", 4)
    assert results_2021.stated_data("# A VAE on binary MNIST\n") == ("mnist", 1)
    assert results_2021.stated_data("# Report\n\n4-bit MNIST below the title\n") is None


@pytest.mark.parametrize("dataset, bits, shown", [("mnist", 4, "4-bit MNIST"), ("fashion_mnist", 1,
                                                                                 "binary FashionMNIST")])
def test_a_run_on_other_data_than_the_report_states_is_refused(runs, capsys, dataset, bits, shown):
    """make report after a 2-epoch MNIST run: one line, exit 2, no figure or report touched (issue 25, cause 22)."""
    main_run, z2_run, report, out = runs
    report.write_text(TITLED)
    set_data(main_run, dataset, bits)
    set_data(z2_run, dataset, bits)
    with pytest.raises(SystemExit) as info:
        make_figures.cli([str(main_run), str(z2_run), "--out_dir", str(out), "--report", str(report)])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"make_figures.py: error: {main_run} is a run on {shown} (its args.json), but the report {report} is about "
        "4-bit FashionMNIST (its title): its results come only from runs of `--dataset fashion_mnist --bits 4`; give "
        "such runs, or write another --report\n")
    assert not out.exists() and report.read_text() == TITLED


def test_a_z2_run_on_other_data_than_the_main_run_is_refused(runs, capsys):
    """Without a title that states the data, the two runs must still share it (one table, one caption)."""
    main_run, z2_run, report, out = runs
    set_data(z2_run, "mnist", 1)
    with pytest.raises(SystemExit) as info:
        make_figures.cli([str(main_run), str(z2_run), "--out_dir", str(out), "--report", str(report)])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(
        "make_figures.py: error: RUN_DIR and RUN_DIR_Z2: `2026-01-01_00-00-00_z20` is on 4-bit FashionMNIST but "
        "`2026-01-01_00-01-00_z2` on binary MNIST ")
    assert not out.exists() and report.read_text() == REPORT_TEXT


def test_a_figure_is_never_removed_without_saying_so(runs, capsys):
    """The older figures a run has no pictures for are removed (they must not pass for its own), each said on
    stderr and listed with what was written."""
    main_run, _, report, out = runs
    out.mkdir()
    for name in ("manifold.png", "interpolations.png", "reconstructions.png"):
        (out / name).write_bytes(b"an older run's figure")
    run_main(main_run, "--out_dir", out, "--report", report)
    captured = capsys.readouterr()
    for name, source in (("manifold.png", "vae_manifold.png"), ("reconstructions.png", "reconstructions_test.png "
                                                                "(evaluate.py)"),
                         ("interpolations.png", "interpolations_test.png (evaluate.py)")):
        assert not (out / name).exists()
        assert (f"make_figures.py: note: removed {out / name}: `2026-01-01_00-00-00_z20` has no {source} for it, "
                "and an older run's figure must not pass for this one\n") in captured.err
        assert f"removed {out / name}\n" in captured.out
    assert f"wrote {out / 'bpd_curves.png'}\n" in captured.out
