"""train_gan.py: its parser is the family's under the script's name, main trains the GAN with the family's steps
and returns exactly what metrics.json holds, and cli runs it to a clean exit (the run folder:
tests/gan/test_family.py; bad inputs and resume: tests/end_to_end/test_2019_runs.py)."""
import json
from pathlib import Path

import pytest

import train_gan
from conftest import GAN_SMALL, train_2019
from dgmkit.gan.config import GANConfig
from dgmkit.gan.family import GAN_FAMILY


def test_the_parser_is_the_familys_under_the_scripts_name(capsys):
    with pytest.raises(SystemExit) as info:
        train_gan.parse_args(["--help"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("usage: train_gan.py ")
    assert isinstance(train_gan.parse_args([]), GANConfig)
    assert GAN_FAMILY.script == Path(train_gan.__file__).resolve()  # a resume hint names this script


def test_main_returns_what_metrics_json_holds(mnist_8bit, tmp_path, capsys):
    metrics = train_2019(train_gan, GAN_SMALL, mnist_8bit, tmp_path, 1)
    assert metrics == json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert capsys.readouterr().out.splitlines()[-1].startswith(GAN_FAMILY.summary(metrics))


def test_cli_ends_cleanly(mnist_8bit, tmp_path, capsys):
    train_gan.cli(["--data_dir", str(mnist_8bit), "--log_dir", str(tmp_path), *GAN_SMALL, "--epochs", "0",
                   "--run_name", "r"])
    assert capsys.readouterr().err == "" and (tmp_path / "r" / "metrics.json").is_file()


def test_a_last_batch_of_one_image_trains_and_checkpoints(mnist_8bit, tmp_path, capsys):
    """Issue 25, cause 8: 72 training images at --batch_size 71 end each epoch with a batch of one image (as 3,600
    at 59, or the full set at 11); the generator's batch norm raised ValueError at the end of epoch 1 and left no
    checkpoint. Now that batch is skipped: two epochs, a checkpoint, exit 0 and nothing on stderr."""
    assert 72 % 71 == 1
    train_gan.cli(["--data_dir", str(mnist_8bit), "--log_dir", str(tmp_path), *GAN_SMALL, "--batch_size", "71",
                   "--epochs", "2", "--run_name", "r"])
    run = tmp_path / "r"
    assert capsys.readouterr().err == "" and (run / "checkpoints" / "last.pt").is_file()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2] and (run / "metrics.json").is_file()


def test_help_says_the_gans_own_words():
    """Issue 25, cause 21: no VAE words (--bits 1 for 2019 MNIST) in the GAN's --help, and the flags it refuses
    say so there."""
    text = " ".join(GANConfig.build_parser("train_gan.py").format_help().split())
    assert "--bits 1" not in text and "mnist (the 2019 assignment, 8-bit: --bits 8, the default)" in text
    assert "do not clip gradients" in text and "fp32 only" in text and "off only" in text


def test_a_diverged_gan_suggests_only_its_own_flags(mnist_8bit, tmp_path, monkeypatch, capsys):
    """Issue 25 #21: the one line of a NaN loss named --grad_clip 1.0, which train_gan.py refuses."""
    from dgmkit.gan import model as gan

    def diverges(*args, **kwargs):
        raise FloatingPointError("discriminator loss is nan")
    monkeypatch.setattr(gan, "train_epoch", diverges)
    with pytest.raises(SystemExit) as info:
        train_gan.cli(["--data_dir", str(mnist_8bit), "--log_dir", str(tmp_path), *GAN_SMALL, "--epochs", "1"])
    line = capsys.readouterr().err.strip()
    assert info.value.code == 1 and "\n" not in line
    assert line.endswith("no epoch finished, so no checkpoint was written: try a lower --lr or --beta1")
    assert "--grad_clip" not in line
