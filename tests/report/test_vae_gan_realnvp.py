"""report/vae_gan_realnvp.py ("The 2019 models") through make_figures.py --models_2019 --compare on tiny real runs of
the three families: the section's figures, the table of each run, and the RealNVP-VAE comparison recomputed here
from the runs' own files."""
import json
import math
import shutil
from statistics import mean, stdev

import pytest
import torch

import make_figures
import train_gan
import train_realnvp
import train_torch
from conftest import generated_data
from dgmkit.vae.model import VAE as VAEModel

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


def test_labels_and_headings_come_from_the_runs_settings(section):
    """The section names each run's own data, z_dim, K and size, nothing typed for the report's runs (issue 25,
    cause 19): here a z_dim 3 VAE, K = 2 and a VAE with 4 filters."""
    _, text = section
    assert "| VAE, binary MNIST (`--bits 1`), z_dim 3 (`vae`) |" in text
    assert "| VAE, binary MNIST, z_dim 2 (`vae2`) |" in text and "| GAN, 8-bit MNIST (`gan`) |" in text
    assert "| RealNVP, 8-bit MNIST (`nvp`) |" in text
    with torch.device("meta"):
        size = sum(p.numel() for p in VAEModel(4, 20, 0.0, levels=16).parameters())  # --num_filters 4, z_dim 20, 4 bits
    assert f"**RealNVP against the VAE on 4-bit FashionMNIST** (" in text and f", the VAE {size:,};" in text
    assert "| seed | RealNVP test bpd (bound, SE over images) | VAE test IW bpd, K = 2 | difference |" in text
    assert "270,616" not in text and "K = 1000" not in text and "z_dim 20" not in text


@pytest.fixture
def copied(section, tmp_path):
    """A copy of the section's run folders (tests damage them) and a report with the section's markers."""
    root, _ = section
    for name in ("models", "flows", "vaes"):
        shutil.copytree(root / name, tmp_path / name)
    (tmp_path / "report.md").write_text(MARKED)
    return tmp_path


MARKED = "<!-- models2019:begin -->\n<!-- models2019:end -->\n"


def refused(root, capsys):
    """make_figures.py --models_2019 on the copied folders: exit status 2, one line (returned), nothing written."""
    with pytest.raises(SystemExit) as info:
        make_figures.cli(["--models_2019", str(root / "models"), "--compare", str(root / "flows"), str(root / "vaes"),
                          "--out_dir", str(root / "out"), "--report", str(root / "report.md")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert not (root / "out").exists() and (root / "report.md").read_text() == MARKED
    return err.removeprefix("make_figures.py: error: ").rstrip("\n")


def edit_json(path, **changes):
    """Set (or, with None, remove) fields of a JSON file, or of every line of a JSON-lines file."""
    def edited(record):
        return {k: v for k, v in {**record, **changes}.items() if v is not None}
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(edited(json.loads(line))) + "\n" for line in path.read_text().splitlines()))
    else:
        path.write_text(json.dumps(edited(json.loads(path.read_text()))))


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "models" / "gan" / "args.json").unlink(),
     "{r}/models/gan/args.json is missing: a run's settings tell its family (VAE, GAN or RealNVP) and its data; "
     "restore the file, or move the folder out of {r}/models"),
    (lambda r: edit_json(r / "models" / "gan" / "history.jsonl", train_d_loss=None),
     "{r}/models/gan/history.jsonl, line 1 lacks 'train_d_loss'; the file is damaged or from another program "
     "(rerun to rewrite it)"),
    (lambda r: edit_json(r / "models" / "gan" / "metrics.json", final_d_fake="0.4"),
     "{r}/models/gan/metrics.json: 'final_d_fake' is '0.4', not a number; the file is damaged"),
    (lambda r: edit_json(r / "models" / "nvp" / "metrics.json", test_bpd_se="0.01"),
     "{r}/models/nvp/metrics.json: 'test_bpd_se' is '0.01', not a number; the file is damaged"),
    (lambda r: edit_json(r / "flows" / "nvp_s2" / "metrics.json", parameters=None),
     "{r}/flows/nvp_s2/metrics.json lacks 'parameters'; the file is damaged or from another program (rerun to "
     "rewrite it)"),
    (lambda r: edit_json(r / "vaes" / "vae_s1" / "args.json", seed=None),
     "{r}/vaes/vae_s1/args.json lacks 'seed'; the file is damaged or from another program (rerun to rewrite it)"),
    (lambda r: (r / "models" / "vae2" / "vae_manifold.png").unlink(),
     "{r}/models/vae2/vae_manifold.png is missing: the z_dim 2 VAE's manifold is one of the section's figures "
     "(training writes it after the test phase)"),
], ids=["no-args.json", "gan-history-without-train_d_loss", "gan-final_d_fake-text", "realnvp-test_bpd_se-text",
        "compare-realnvp-without-parameters", "compare-vae-without-seed", "z2-vae-without-manifold"])
def test_each_familys_fields_are_checked(copied, capsys, damage, message):
    """What each family's part of the section reads is present and of its type: one line naming the file and the
    field (issue 25, cause 15)."""
    damage(copied)
    assert refused(copied, capsys) == message.format(r=copied)


def set_data(run_dir, dataset, bits):
    """A run folder's records as if it had trained (and been evaluated) on `dataset` at `bits`."""
    edit_json(run_dir / "args.json", dataset=dataset, bits=bits)
    if "dataset" in json.loads((run_dir / "eval_test.json").read_text()):
        edit_json(run_dir / "eval_test.json", dataset=dataset, bits=bits)


@pytest.mark.parametrize("folder, dataset, bits, first, second", [
    ("flows", "mnist", 8, "`nvp_s1` is on 8-bit MNIST", "`vae_s1` on 4-bit FashionMNIST"),
    ("vaes", "fashion_mnist", 1, "`nvp_s1` is on 4-bit FashionMNIST", "`vae_s1` on binary FashionMNIST"),
], ids=["realnvp-on-8-bit-mnist", "vae-at-1-bit"])
def test_a_comparison_of_runs_on_different_data_is_refused(copied, capsys, folder, dataset, bits, first, second):
    """RealNVP on 8-bit MNIST against the VAE on 4-bit FashionMNIST (or another bit depth): refused in one line,
    not "+3.78 bpd, higher for RealNVP" under a heading of one of them (issue 25, cause 19)."""
    for seed in (1, 2, 3):
        set_data(copied / folder / f"{folder[:-1].replace('flow', 'nvp')}_s{seed}", dataset, bits)
    assert refused(copied, capsys) == (
        f"--compare {copied / 'flows'} {copied / 'vaes'}: {first} but {second} (args.json, eval_test.json): runs on "
        "different data (dataset or bits) are not compared; give runs on one dataset at one bit depth")


def test_a_side_by_side_timing_on_different_data_is_refused(copied, capsys):
    timing = copied / "flows" / "timing"
    realnvp = next(p for p in timing.iterdir() if "hidden_channels" in (p / "args.json").read_text())
    set_data(realnvp, "mnist", 8)
    assert refused(copied, capsys).startswith(f"{timing} (the side-by-side timing): `")


def test_an_evaluation_on_other_data_than_the_training_is_refused(copied, capsys):
    edit_json(copied / "flows" / "nvp_s1" / "eval_test.json", dataset="mnist", bits=8)
    assert refused(copied, capsys) == (
        f"{copied / 'flows' / 'nvp_s1' / 'eval_test.json'} evaluates 8-bit MNIST, but the run trained on 4-bit "
        "FashionMNIST (args.json); rerun evaluate.py on the run's own data")
