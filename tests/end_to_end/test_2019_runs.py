"""The 2019 models through the CLI: train_realnvp.py and train_gan.py resume exactly, and refuse another family's
checkpoint in one line (the run folders they write: tests/realnvp/test_family.py, tests/gan/test_family.py)."""
import pytest

import evaluate
import train_gan
import train_realnvp
import train_torch
from cli_contract import snapshot
from conftest import GAN_SMALL, REALNVP_SMALL, error_line, history_without_time, only_run_dir, train_2019

SCRIPTS = {"realnvp": (train_realnvp, REALNVP_SMALL), "gan": (train_gan, GAN_SMALL)}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["realnvp", "gan"])
def test_resume_is_exact(family, mnist_8bit, tmp_path):
    """2 epochs, then a resume to 3, equal 3 straight epochs: history, metrics, samples and (GAN) interpolation."""
    script, flags = SCRIPTS[family]
    straight = train_2019(script, flags, mnist_8bit, tmp_path / "straight", 3)
    train_2019(script, flags, mnist_8bit, tmp_path / "cut", 2)
    resumed = script.main(script.parse_args(["--resume", str(tmp_path / "cut" / "r"), "--epochs", "3"]))
    a, b = tmp_path / "straight" / "r", tmp_path / "cut" / "r"
    assert history_without_time(a) == history_without_time(b) and len(history_without_time(a)) == 3
    for key in ("test_bpd", "final_d_loss", "final_d_fake", "interpolation_labels"):
        assert straight.get(key) == resumed.get(key)
    for png in ("samples_epoch_003.png", "interpolation.png"):
        assert (a / png).is_file() == (b / png).is_file()
        if (a / png).is_file():
            assert (a / png).read_bytes() == (b / png).read_bytes(), png


def test_another_familys_checkpoint_is_refused_in_one_line(mnist_8bit, tmp_path, capsys):
    train_2019(train_gan, GAN_SMALL, mnist_8bit, tmp_path, 1)
    run = tmp_path / "r"
    before = snapshot(tmp_path)
    for cli, argv, script in [(train_realnvp.cli, ["--resume", str(run)], "train_realnvp.py"),
                              (train_torch.cli, ["--resume", str(run)], "train_torch.py"),
                              (evaluate.cli, [str(run / "checkpoints" / "last.pt")], "train_torch.py")]:
        with pytest.raises(SystemExit) as info:
            cli(argv)
        line = error_line(capsys)
        assert info.value.code == 2 and f"not a checkpoint of {script}" in line, line
    assert snapshot(tmp_path) == before  # nothing was written
    assert only_run_dir(tmp_path) == run
