"""The 2019 models through the kit: train_realnvp.py and train_gan.py train, resume exactly, refuse another family's
checkpoint and settings they cannot honour in one line, and write the run folder and TensorBoard of the VAE."""
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import evaluate
import train_gan
import train_realnvp
import train_torch
from cli_contract import snapshot
from conftest import error_line, generated_data, history_without_time, only_run_dir

COMMON = ["--device", "cpu", "--no-progress_bar", "--sample_epochs", "0", "--batch_size", "32"]
REALNVP = [*COMMON, "--hidden_channels", "4", "--num_blocks", "1", "--couplings", "1", "--final_draws", "2"]
GAN = [*COMMON, "--latent_dim", "8"]
SCRIPTS = {"realnvp": (train_realnvp, REALNVP), "gan": (train_gan, GAN)}


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return generated_data(tmp_path_factory.mktemp("mnist8"), 80, 20, seed=11, folder="MNIST")


def train(script, flags, data, logs, epochs, name="r"):
    return script.main(script.parse_args(["--data_dir", str(data), "--log_dir", str(logs), *flags, "--epochs",
                                          str(epochs), "--run_name", name]))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["realnvp", "gan"])
def test_resume_is_exact(family, mnist, tmp_path):
    """2 epochs, then a resume to 3, equal 3 straight epochs: history, metrics, samples and (GAN) interpolation."""
    script, flags = SCRIPTS[family]
    straight = train(script, flags, mnist, tmp_path / "straight", 3)
    train(script, flags, mnist, tmp_path / "cut", 2)
    resumed = script.main(script.parse_args(["--resume", str(tmp_path / "cut" / "r"), "--epochs", "3"]))
    a, b = tmp_path / "straight" / "r", tmp_path / "cut" / "r"
    assert history_without_time(a) == history_without_time(b) and len(history_without_time(a)) == 3
    for key in ("test_bpd", "final_d_loss", "final_d_fake", "interpolation_labels"):
        assert straight.get(key) == resumed.get(key)
    for png in ("samples_epoch_003.png", "interpolation.png"):
        assert (a / png).is_file() == (b / png).is_file()
        if (a / png).is_file():
            assert (a / png).read_bytes() == (b / png).read_bytes(), png


def test_realnvp_clips_its_gradients_when_asked(mnist, tmp_path):
    """--grad_clip reaches RealNVP's steps: clipped to a norm of 1e-9, Adam's steps shrink below its epsilon and
    the first epoch's training statistics differ from the unclipped run's (same seed, same data order)."""
    train(train_realnvp, REALNVP, mnist, tmp_path / "free", 1)
    train(train_realnvp, [*REALNVP, "--grad_clip", "1e-9"], mnist, tmp_path / "clipped", 1)
    free, clipped = (history_without_time(tmp_path / name / "r")[0] for name in ("free", "clipped"))
    assert free["train_bpd"] != clipped["train_bpd"] and free["val_bpd"] != clipped["val_bpd"]


def test_realnvp_run_folder_and_tensorboard(mnist, tmp_path):
    metrics = train(train_realnvp, REALNVP, mnist, tmp_path, 2)
    run = tmp_path / "r"
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert {"train_bpd", "val_bpd", "train_nll_nats", "val_logdet_nats"} <= history[-1].keys()
    # bpd is nll_nats in bits per dimension, and a valid bound on 8-bit data is above 0 and below 8 + slack.
    assert history[-1]["val_bpd"] == pytest.approx(history[-1]["val_nll_nats"] / (784 * 0.6931471805599453))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test_bpd"] == metrics["test_bpd"] and saved["draws"] == 2 and saved["test_bpd_se"] > 0
    assert 0 < saved["test_bpd"] < 9 and saved["best_epoch"] in (1, 2)
    per_image = json.loads((run / "eval_test.json").read_text())["per_image_bpd"]
    assert len(per_image) == 20 and sum(per_image) / 20 == pytest.approx(saved["test_bpd"], rel=1e-9)
    events = EventAccumulator(str(run)).Reload()
    assert sorted({tag.split("/")[0] for tag in events.Tags()["scalars"]})[0] == "bpd"
    assert {"bpd/train", "bpd/val", "flow_terms/logdet_nats_val", "final/test_bpd"} <= set(events.Tags()["scalars"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert not (run / "hparams").exists()


def test_gan_run_folder_and_tensorboard(mnist, tmp_path):
    metrics = train(train_gan, GAN, mnist, tmp_path, 2)
    run = tmp_path / "r"
    assert (run / "interpolation.png").is_file() and not (run / "checkpoints" / "best.pt").exists()
    assert 0 < metrics["final_d_real"] < 1 and 0 < metrics["final_d_fake"] < 1
    events = EventAccumulator(str(run)).Reload()
    assert {"gan/d_loss_train", "gan/g_loss_train", "gan/d_real_train", "gan/d_fake_train"} <= set(
        events.Tags()["scalars"])
    assert {"samples", "interpolation"} <= set(events.Tags()["images"])


@pytest.mark.parametrize("cli, argv, says", [
    (train_realnvp.cli, ["--precision", "bf16"], "fp32 only"),
    (train_gan.cli, ["--grad_clip", "1"], "do not clip"),
    (train_gan.cli, ["--compile", "on"], "eagerly"),
    (train_gan.cli, ["--batch_size", "1"], "at least 2"),
])
def test_settings_a_family_cannot_honour_are_refused(cli, argv, says, capsys):
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 2 and says in error_line(capsys)


def test_another_familys_checkpoint_is_refused_in_one_line(mnist, tmp_path, capsys):
    train(train_gan, GAN, mnist, tmp_path, 1)
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
