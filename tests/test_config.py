"""The run's settings object (config.TrainConfig) and the project's layout: one field per flag, the typed flags
found without argparse internals, frozen, and part1/ installable with every module."""
import dataclasses
import re
from pathlib import Path

import pytest

from config import TrainConfig, build_parser, parse_train_args
from conftest import PART1


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


def test_pyproject_installs_every_module_of_part1():
    text = (PART1 / "pyproject.toml").read_text()
    listed = re.findall(r'"(\w+)"', text[text.index("py-modules"):])
    assert sorted(listed) == sorted(p.stem for p in PART1.glob("*.py"))
