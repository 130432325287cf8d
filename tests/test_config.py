"""The run's settings object (config.TrainConfig) and the project's layout: one field per flag, the typed flags
found without argparse internals, frozen, and part1/ installable with every module."""
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PART1
from dgmkit.vae.config import TrainConfig, build_parser, parse_train_args


def test_one_field_per_flag():
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "given"]
    assert sorted(fields) == sorted(vars(build_parser().parse_args([])))


@pytest.mark.parametrize("argv, typed", [
    ([], set()),
    (["--epochs", "80"], {"epochs"}),  # the default's value, typed: given (a resume honours it)
    (["--z_dim", "20", "--no-progress_bar", "--sample_epochs"], {"z_dim", "progress_bar", "sample_epochs"}),
    (["--compile", "--deterministic", "--channels_last"], {"compile", "deterministic", "channels_last"}),
    (["--resume", "x", "--data_dir=d"], {"resume", "data_dir"}),
])
def test_given_holds_exactly_the_typed_flags(argv, typed):
    config = parse_train_args(argv)
    assert config.given == frozenset(typed)
    assert parse_train_args(argv).to_dict() == parse_train_args(argv).to_dict()  # values unaffected by the 2nd parse
    assert config.to_dict()["sample_epochs"] == ([] if "sample_epochs" in typed else [0, 10, 80])


def test_frozen_and_round_trips_through_its_dict():
    config = parse_train_args(["--z_dim", "3", "--data_dir", "some/where", "--grad_clip", "0.5"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.z_dim = 4
    again = TrainConfig.from_dict({**config.to_dict(), "auto_choices": {"compile": False}}, config.given)
    assert again == config and isinstance(again.data_dir, Path) and again.to_dict()["data_dir"] == "some/where"


ASSIGNMENT_MODULES = ["cnn_encoder_decoder", "fmnist", "train_torch", "utils"]  # the course's own module names


def test_pyproject_installs_one_package_and_the_assignments_modules():
    """Only dgmkit and the assignment's module names reach site-packages; every other top-level file of part1/ is a
    script (run, never imported), so a user's own utils-like names do not collide with more of ours."""
    text = (PART1 / "pyproject.toml").read_text()
    listed = re.findall(r'"(\w+)"', text[text.index("py-modules"):text.index("[tool.setuptools.packages.find]")])
    assert sorted(listed) == ASSIGNMENT_MODULES
    assert 'include = ["dgmkit*"]' in text
    scripts = sorted(p.stem for p in PART1.glob("*.py") if p.stem not in ASSIGNMENT_MODULES)
    assert scripts == ["benchmark", "evaluate", "sweep", "train_gan", "train_realnvp"]
    for name in scripts:
        assert 'if __name__ == "__main__":' in (PART1 / f"{name}.py").read_text(), name


def test_the_installed_library_exposes_no_script_module(tmp_path):
    """Imported from a folder outside the checkout (so only site-packages is searched): the package and the
    assignment's modules import, the scripts do not."""
    pytest.importorskip("importlib.metadata")
    import importlib.metadata
    try:
        importlib.metadata.distribution("dgm-vae-kit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("part1/ is not installed (pip install -e ./part1, as requirements.txt does)")
    code = ("import importlib\n"
            "for name in ('dgmkit.vae.family', 'dgmkit.gan.family', 'dgmkit.realnvp.family', 'train_torch', 'utils'):\n"
            "    importlib.import_module(name)\n"
            "for name in ('evaluate', 'sweep', 'benchmark', 'train_gan', 'config', 'model', 'dataset', 'runs'):\n"
            "    try:\n        importlib.import_module(name)\n    except ImportError:\n        continue\n"
            "    raise SystemExit(f'{name} is importable')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
