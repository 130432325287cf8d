"""dgmkit/realnvp/config.py: RealNVPConfig's defaults are the 2019 setting (8-bit MNIST, the paper's 3 couplings per
scale, fp32), the settings a checkpoint depends on are settings of its parser, and --precision other than fp32 is
refused in one line."""
import pytest

import train_realnvp
from conftest import error_line
from dgmkit.realnvp.config import RealNVPConfig


def test_the_defaults_are_the_2019_setting_in_fp32():
    config = RealNVPConfig.parse([])
    assert (config.dataset, config.bits, config.precision) == ("mnist", 8, "fp32")
    assert (config.hidden_channels, config.num_blocks, config.num_scales, config.couplings) == (32, 2, 2, 3)
    assert (config.lr, config.batch_size, config.epochs) == (1e-3, 64, 40)
    assert (config.final_draws, config.temperature) == (10, 1.0)
    assert config.run_stem() == "realnvp" and RealNVPConfig.SCRIPT.name == "train_realnvp.py"


def test_the_checkpoints_keys_are_settings():
    settings = RealNVPConfig.defaults()
    assert set(RealNVPConfig.REQUIRED) <= set(RealNVPConfig.SHAPE_KEYS) <= set(settings)


@pytest.mark.parametrize("cli, argv, says", [
    (train_realnvp.cli, ["--precision", "bf16"], "fp32 only"),
    (train_realnvp.cli, ["--precision", "auto"], "fp32 only"),
    (train_realnvp.cli, ["--temperature", "1e300"], "argument --temperature: must be a number in (0, 100], got 1e300"),
])
def test_settings_a_family_cannot_honour_are_refused(cli, argv, says, capsys):
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 2 and says in error_line(capsys)
