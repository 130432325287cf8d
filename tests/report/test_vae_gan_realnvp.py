"""report/vae_gan_realnvp.py ("The 2019 models") through make_figures.py --models_2019 --compare on tiny real runs of
the three families: the section's figures, the table of each run, and the RealNVP-VAE comparison recomputed here
from the runs' own files."""
import json
import math
from statistics import mean, stdev

import pytest

import make_figures
import train_gan
import train_realnvp
import train_torch
from conftest import generated_data

pytestmark = pytest.mark.slow  # eleven small trainings of three families

FAST = ["--device", "cpu", "--no-progress_bar", "--batch_size", "32", "--epochs", "1"]
VAE = [*FAST, "--num_filters", "4", "--final_iw_samples", "2", "--sample_epochs", "0"]
NVP = [*FAST, "--hidden_channels", "4", "--num_blocks", "1", "--couplings", "1", "--final_draws", "1",
       "--sample_epochs", "0"]


def run(script, argv):
    return script.main(script.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    root = tmp_path_factory.mktemp("models2019")
    mnist = generated_data(root / "mnist", 60, 12, seed=4, folder="MNIST")
    fashion = generated_data(root / "fashion", 60, 12, seed=5)
    models, flows, vaes = root / "models", root / "flows", root / "vaes"
    run(train_torch, ["--dataset", "mnist", "--bits", "1", "--data_dir", mnist, "--log_dir", models, *VAE,
                      "--z_dim", "3", "--run_name", "vae", "--sample_epochs", "0", "1"])
    run(train_torch, ["--dataset", "mnist", "--bits", "1", "--data_dir", mnist, "--log_dir", models, *VAE,
                      "--z_dim", "2", "--run_name", "vae2"])
    run(train_gan, ["--data_dir", mnist, "--log_dir", models, *FAST, "--latent_dim", "4", "--run_name", "gan",
                    "--sample_epochs", "0"])
    run(train_realnvp, ["--data_dir", mnist, "--log_dir", models, *NVP, "--run_name", "nvp"])
    for seed in (1, 2, 3):
        run(train_realnvp, ["--dataset", "fashion_mnist", "--bits", "4", "--data_dir", fashion, "--log_dir", flows,
                            *NVP, "--seed", seed, "--run_name", f"nvp_s{seed}"])
        run(train_torch, ["--data_dir", fashion, "--log_dir", vaes, *VAE, "--seed", seed, "--run_name", f"vae_s{seed}"])
    for script, flags in ((train_realnvp, NVP), (train_torch, VAE)):
        run(script, ["--dataset", "fashion_mnist", "--bits", "4", "--data_dir", fashion, "--log_dir", flows / "timing",
                     *flags])
    report = root / "report.md"
    report.write_text("intro\n<!-- models2019:begin -->\nOLD-BLOCK\n<!-- models2019:end -->\nend\n")
    make_figures.main(make_figures.parse_args(["--models_2019", str(models), "--compare", str(flows), str(vaes),
                                               "--out_dir", str(root / "figures"), "--report", str(report)]))
    return root, report.read_text()


def test_every_figure_and_the_report_block(section):
    root, text = section
    for name in ("vae_curves", "vae_samples", "vae_manifold", "gan_curves", "gan_samples", "gan_interpolation",
                 "realnvp_curves", "realnvp_samples", "compare"):
        png = root / "figures" / f"models2019_{name}.png"
        assert png.is_file() and png.stat().st_size > 5000, name
        assert f"(figures/models2019_{name}.png)" in text
    assert text.startswith("intro\n") and text.endswith("end\n") and "OLD-BLOCK" not in text
    assert (root / "figures" / "models_2019.md").read_text().count("| seed |") == 1


def test_the_comparison_is_recomputed_from_the_runs_files(section):
    root, text = section
    deltas, images = [], []
    for seed in (1, 2, 3):
        nvp = json.loads((root / "flows" / f"nvp_s{seed}" / "metrics.json").read_text())
        nvp_eval = json.loads((root / "flows" / f"nvp_s{seed}" / "eval_test.json").read_text())
        vae = json.loads((root / "vaes" / f"vae_s{seed}" / "eval_test.json").read_text())
        deltas.append(nvp["test_bpd"] - vae["iw_bpd"])
        d = [a - b for a, b in zip(nvp_eval["per_image_bpd"], vae["per_image_iw_bpd"])]
        images.append(stdev(d) ** 2 / len(d))
        assert f"| {seed} | {nvp['test_bpd']:.4f} ± {nvp['test_bpd_se']:.4f} | {vae['iw_bpd']:.4f}" in text
    half = 4.302652729911275 * stdev(deltas) / math.sqrt(3)  # t quantile, 2 degrees of freedom, 97.5%
    assert f"Mean difference {mean(deltas):+.4f} bpd" in text
    assert f"[{mean(deltas) - half:+.4f}, {mean(deltas) + half:+.4f}]" in text
    assert f"is {math.sqrt(sum(images)) / 3:.4f}" in text
    timing = {}
    for run_dir in (root / "flows" / "timing").iterdir():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        timing["realnvp" if "draws" in metrics else "vae"] = metrics["seconds_per_epoch"]
    assert (f"the VAE takes {timing['vae']:.2f} s per epoch, RealNVP {timing['realnvp']:.2f} s "
            f"({timing['realnvp'] / timing['vae']:.1f} times as long)") in text


def test_a_missing_model_is_refused_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    report = tmp_path / "report.md"
    report.write_text("<!-- models2019:begin -->\n<!-- models2019:end -->\n")
    with pytest.raises(SystemExit) as info:
        make_figures.cli(["--models_2019", str(tmp_path / "empty"), "--compare", str(tmp_path), str(tmp_path),
                          "--out_dir", str(tmp_path / "out"), "--report", str(report)])
    assert info.value.code == 2 and "no finished run for vae, vae_z2, gan, realnvp" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
