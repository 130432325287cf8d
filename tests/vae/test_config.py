"""dgmkit/vae/config.py: the VAE's settings object, TrainConfig: one field per flag, `given` holding exactly the typed
flags (found without argparse internals), frozen, and round-tripping through its dict."""
import dataclasses
from pathlib import Path

import pytest

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
