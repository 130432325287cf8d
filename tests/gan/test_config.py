"""dgmkit/gan/config.py: GANConfig's defaults are the 2019 setting (8-bit MNIST, 100 latents, Adam at 2e-4 with beta1
0.5 for 200 epochs, fp32, eager), the settings a checkpoint depends on are settings of its parser, and what the GAN
cannot honour (gradient clipping, compiling, a batch of one for batch norm) is refused in one line."""
import pytest

import train_gan
from conftest import error_line
from dgmkit.gan.config import GANConfig


def test_the_defaults_are_the_2019_setting():
    config = GANConfig.parse([])
    assert (config.dataset, config.bits, config.precision, config.compile) == ("mnist", 8, "fp32", "off")
    assert (config.latent_dim, config.lr, config.beta1, config.batch_size, config.epochs) == (100, 2e-4, 0.5, 64, 200)
    assert config.grad_clip is None and config.run_stem() == "gan" and GANConfig.SCRIPT.name == "train_gan.py"


def test_the_checkpoints_keys_are_settings():
    assert set(GANConfig.REQUIRED) <= set(GANConfig.SHAPE_KEYS) <= set(GANConfig.defaults())


@pytest.mark.parametrize("cli, argv, says", [
    (train_gan.cli, ["--grad_clip", "1"], "do not clip"),
    (train_gan.cli, ["--compile", "on"], "eagerly"),
    (train_gan.cli, ["--batch_size", "1"], "at least 2"),
    (train_gan.cli, ["--beta1", "1.0"], "argument --beta1: must be a number in [0, 1), got 1.0"),  # Adam's range
])
def test_settings_a_family_cannot_honour_are_refused(cli, argv, says, capsys):
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 2 and says in error_line(capsys)
