"""dgmkit/engine/settings.py on a toy family declared here: the parser built from the fields (groups in --help's
order, the family's own flags first), `given` holding exactly the typed flags, a family's DEFAULTS, the round trip
through to_dict/from_dict, check_saved refusing a saved value by its declaration (type, range, choices) in one line,
and the 2019 models' refusal of a precision other than fp32."""
import argparse
import dataclasses
import re
from pathlib import Path
from typing import ClassVar

import pytest

from dgmkit.cli.args import ArgumentParser, int_at_least
from dgmkit.engine import settings
from dgmkit.engine.settings import GROUPS, RunConfig, flag, fp32_only
from dgmkit.errors import UserError
from dgmkit.gan.config import GANConfig
from dgmkit.places import PART1_DIR, REPO_ROOT
from dgmkit.realnvp.config import RealNVPConfig
from dgmkit.vae.config import TrainConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig(RunConfig):
    SCRIPT: ClassVar = Path("toy.py")
    DESCRIPTION: ClassVar = "A toy family."
    REQUIRED: ClassVar = ("width",)
    SHAPE_KEYS: ClassVar = ("width",)
    DEFAULTS: ClassVar = {"epochs": 7, "precision": "fp32"}
    HELP: ClassVar = {"stem": "w<width>", "bits_tail": ""}  # the words the common flags' help leaves to a family
    width: int = flag("model", "channels", 3, type=int_at_least(1))
    shape: str = flag("model", "square or round", "square", choices=("square", "round"))
    draws: int = flag("evaluation", "draws per image", 2, type=int_at_least(1))

    def run_stem(self):
        return f"w{self.width}"


def test_the_parser_is_built_from_the_fields(capsys):
    parser = ToyConfig.build_parser()
    titles = [group.title for group in parser._action_groups[2:]]  # after argparse's positionals and options
    assert [t.split(" ")[0] for t in titles] == [g for g in GROUPS if g in [t.split(" ")[0] for t in titles]]
    assert titles[0] == "model" and parser.prog == "toy.py" and parser.description == "A toy family."
    config = ToyConfig.parse([])
    assert (config.width, config.shape, config.draws, config.epochs, config.precision) == (3, "square", 2, 7, "fp32")
    assert config.lr == 1e-3 and config.run_stem() == "w3"  # a common flag keeps RunConfig's default
    with pytest.raises(SystemExit) as info:
        ToyConfig.parse(["--shape", "oval"])
    assert info.value.code == 2 and "argument --shape: invalid choice: 'oval'" in capsys.readouterr().err


def test_to_dicts_order_puts_the_familys_own_flags_first():
    names = list(ToyConfig.defaults())
    assert names[:2] == ["width", "shape"]  # model: the family's own
    assert names.index("eval_batch_size") < names.index("draws")  # evaluation: the common one leads
    assert list(ToyConfig.parse([]).to_dict()) == names


@pytest.mark.parametrize("argv, typed", [([], set()), (["--epochs", "7"], {"epochs"}),
                                         (["--width", "3", "--shape=round"], {"width", "shape"})])
def test_given_holds_exactly_the_typed_flags_even_at_their_defaults(argv, typed):
    assert ToyConfig.parse(argv).given == frozenset(typed)


def test_round_trip_through_the_dict():
    config = ToyConfig.parse(["--width", "5", "--data_dir", "some/where"])
    saved = config.to_dict()
    assert saved["width"] == 5 and saved["data_dir"] == "some/where"  # plain values: a path as text
    again = ToyConfig.from_dict({**saved, "auto_choices": {}}, config.given)  # keys that are not settings: left out
    assert again == config and isinstance(again.data_dir, Path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.width = 6


@pytest.mark.parametrize("name, value, says", [
    ("width", 0, "argument --width: must be at least 1, got 0"),
    ("width", True, "setting 'width' is True, not a value of the right type"),
    ("width", 2.0, "setting 'width' is 2.0, not a value of the right type"),
    ("shape", "oval", "argument --shape: invalid choice: 'oval'"),
    ("data_dir", 5, "setting 'data_dir' is 5, not a path of the right type"),
])
def test_check_saved_refuses_a_value_its_flag_would(name, value, says):
    saved = {**ToyConfig.parse([]).to_dict(), name: value}
    with pytest.raises(UserError) as info:
        ToyConfig.check_saved(saved, "last.pt, args")
    assert str(info.value).startswith(f"last.pt, args: {says}") and str(info.value).endswith("the file is damaged")


def test_check_saved_leaves_what_is_not_a_setting_alone():
    ToyConfig.check_saved({**ToyConfig.parse([]).to_dict(), "auto_choices": {"compile": False}, "resume": 3,
                           "grad_clip": None, "lr": 1}, "args.json")  # resume is never checked; an int is a float


def test_fp32_only(capsys):
    parser = ArgumentParser(prog="train_x.py")
    fp32_only(parser, argparse.Namespace(precision="fp32"), "the model")  # nothing to refuse
    for precision in ("bf16", "auto"):
        with pytest.raises(SystemExit) as info:
            fp32_only(parser, argparse.Namespace(precision=precision), "the model")
        assert info.value.code == 2
        assert capsys.readouterr().err == (f"train_x.py: error: --precision {precision}: the model trains in fp32 "
                                           "only; drop the flag (see --help)\n")


# ---- the three families: today's defaults and order, and their saved settings checked without argv ----

FAMILIES = (TrainConfig, RealNVPConfig, GANConfig)
COMMON = {"lr": 1e-3, "batch_size": 128, "epochs": 80, "seed": 42, "grad_clip": None, "dataset": "fashion_mnist",
          "bits": 4, "data_dir": str(REPO_ROOT / "data"), "num_workers": 0, "precision": "auto", "channels_last": None,
          "compile": "auto", "deterministic": False, "eval_batch_size": 512, "log_dir": str(PART1_DIR / "VAE_logs"),
          "run_name": None, "sample_epochs": [0, 10, 80], "progress_bar": None, "resume": None, "device": "auto"}
# Every default as the hand-written parsers of the previous layout gave them (the issue: no default may change).
DEFAULTS = {
    TrainConfig: {**COMMON, "z_dim": 20, "num_filters": 32, "flow": "none", "flow_length": 0, "objective": "elbo",
                  "train_samples": 1, "final_iw_samples": 100},
    RealNVPConfig: {**COMMON, "hidden_channels": 32, "num_blocks": 2, "num_scales": 2, "couplings": 3,
                    "batch_size": 64, "epochs": 40, "dataset": "mnist", "bits": 8, "precision": "fp32",
                    "log_dir": str(PART1_DIR / "RealNVP_logs"), "sample_epochs": [0, 20, 40], "final_draws": 10,
                    "temperature": 1.0},
    GANConfig: {**COMMON, "latent_dim": 100, "beta1": 0.5, "lr": 2e-4, "batch_size": 64, "epochs": 200,
                "dataset": "mnist", "bits": 8, "precision": "fp32", "compile": "off",
                "log_dir": str(PART1_DIR / "GAN_logs"), "sample_epochs": [0, 100, 200]},
}
# --help's flags in order (group by group): each family's own first, but after --eval_batch_size under evaluation.
ORDER = {
    TrainConfig: "z_dim num_filters flow flow_length objective train_samples lr batch_size epochs seed grad_clip "
                 "dataset bits data_dir num_workers precision channels_last compile deterministic eval_batch_size "
                 "final_iw_samples log_dir run_name sample_epochs progress_bar resume device",
    RealNVPConfig: "hidden_channels num_blocks num_scales couplings lr batch_size epochs seed grad_clip dataset bits "
                   "data_dir num_workers precision channels_last compile deterministic eval_batch_size final_draws "
                   "temperature log_dir run_name sample_epochs progress_bar resume device",
    GANConfig: "latent_dim beta1 lr batch_size epochs seed grad_clip dataset bits data_dir num_workers precision "
               "channels_last compile deterministic eval_batch_size log_dir run_name sample_epochs progress_bar "
               "resume device",
}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__)
def test_the_parser_is_built_from_the_fields_with_todays_defaults(family):
    fields = [f.name for f in dataclasses.fields(family) if f.name != "given"]
    parsed = vars(family.build_parser().parse_args([]))
    assert sorted(parsed) == sorted(fields)  # one flag per field, no other
    assert family.defaults() == DEFAULTS[family] and family.parse([]).to_dict() == DEFAULTS[family]
    assert list(family.defaults()) == ORDER[family].split() == list(family.parse([]).to_dict())


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__)
def test_help_lists_the_groups_in_order_with_each_flags_help(family):
    text = family.build_parser("prog").format_help()
    titles = re.findall(r"^(model|optimization|data|speed \(same model and loss; see report/measurements.md\)|"
                        r"evaluation|logging|hardware):$", text, re.M)
    assert [t.split()[0] for t in titles] == [g for g in settings.GROUPS if g in {
        settings._flags(family)[name].group for name in settings._flags(family)}]
    for name, declared in settings._flags(family).items():
        words = family.HELP_OF.get(name, declared.help).format(**family.HELP).split()[:4]
        assert " ".join(words) in " ".join(text.split()), name  # the declared help (or the family's own), its words


def test_family_words_fill_the_common_help():
    assert "<date>_<time>_z<z_dim>" in TrainConfig.build_parser().format_help()
    assert "<date>_<time>_gan" in " ".join(GANConfig.build_parser().format_help().split())
    assert "uniform dequantization" in " ".join(RealNVPConfig.build_parser().format_help().split())


def test_typed_flags_are_given_and_nothing_else():
    config = TrainConfig.parse(["--lr", "0.1", "--no-progress_bar", "--sample_epochs", "--compile"])
    assert config.given == {"lr", "progress_bar", "sample_epochs", "compile"}
    assert (config.lr, config.progress_bar, config.sample_epochs, config.compile) == (0.1, False, [], "on")


@pytest.fixture
def no_command_line(monkeypatch):
    """check_saved must not parse a command line: any parse_args call fails the test."""
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args",
                        lambda *a, **k: pytest.fail("check_saved parsed a command line"))


def test_saved_settings_that_fit_pass_without_a_command_line(no_command_line):
    saved = {**DEFAULTS[TrainConfig], "lr": 1, "grad_clip": 0.5, "channels_last": True, "progress_bar": None,
             "sample_epochs": [], "run_name": "a_run", "resume": "anything", "auto_choices": {"compile": False},
             "from_an_older_version": object()}
    TrainConfig.check_saved(saved, "f")  # lr 1: an int where a float is declared is a number all the same


@pytest.mark.parametrize("name, value, says", [
    ("lr", -1.0, "f: argument --lr: must be a finite number > 0, got -1.0; the file is damaged"),
    ("lr", "0.1", "f: setting 'lr' is '0.1', not a value of the right type; the file is damaged"),
    ("flow", "spline", "f: argument --flow: invalid choice: 'spline' (choose from 'none', 'planar', 'radial'); the "
                       "file is damaged"),
    ("z_dim", True, "f: setting 'z_dim' is True, not a value of the right type; the file is damaged"),
    ("z_dim", 2.0, "f: setting 'z_dim' is 2.0, not a value of the right type; the file is damaged"),
    ("z_dim", 0, "f: argument --z_dim: must be at least 1, got 0; the file is damaged"),
    ("data_dir", 5, "f: setting 'data_dir' is 5, not a path of the right type; the file is damaged"),
    ("data_dir", None, "f: setting 'data_dir' is None, not a path of the right type; the file is damaged"),
    ("sample_epochs", [1, "a"], "f: setting 'sample_epochs' is [1, 'a'], not a list of integers; the file is damaged"),
    ("sample_epochs", [0, -1], "f: argument --sample_epochs: must be at least 0, got -1; the file is damaged"),
    ("sample_epochs", 10, "f: setting 'sample_epochs' is 10, not a value of the right type; the file is damaged"),
    ("channels_last", "yes", "f: setting 'channels_last' is 'yes', not a value of the right type; the file is "
                             "damaged"),
    ("deterministic", 1, "f: setting 'deterministic' is 1, not a value of the right type; the file is damaged"),
    ("run_name", "../up", "f: argument --run_name: must be a plain folder name (no '/', not starting with '.'), got "
                          "'../up'; the file is damaged"),
    ("seed", 2 ** 32, f"f: argument --seed: must be between 0 and {2 ** 32 - 1}, got {2 ** 32}; the file is damaged"),
])
def test_each_damaged_setting_is_one_line_naming_it(no_command_line, name, value, says):
    with pytest.raises(UserError) as caught:
        TrainConfig.check_saved({**DEFAULTS[TrainConfig], name: value}, "f")
    assert str(caught.value) == says


def test_the_other_families_check_their_own_settings(no_command_line):
    RealNVPConfig.check_saved({**DEFAULTS[RealNVPConfig], "z_dim": "not a RealNVP setting"}, "f")
    with pytest.raises(UserError, match=r"argument --num_scales: must be between 1 and 2, got 3"):
        RealNVPConfig.check_saved({**DEFAULTS[RealNVPConfig], "num_scales": 3}, "f")
    with pytest.raises(UserError, match=r"argument --temperature: must be a number in \(0, 100\], got 0.0"):
        RealNVPConfig.check_saved({**DEFAULTS[RealNVPConfig], "temperature": 0.0}, "f")
    with pytest.raises(UserError, match=r"argument --beta1: must be a number in \[0, 1\), got -0.5"):
        GANConfig.check_saved({**DEFAULTS[GANConfig], "beta1": -0.5}, "f")


def test_value_kinds_follow_the_annotations():
    kinds = settings._value_kinds
    assert kinds(int) == (int,) and kinds(float) == (int, float) and kinds(settings.Path) == (str, settings.Path)
    assert set(kinds(RunConfig.__annotations__["grad_clip"])) == {int, float, type(None)}
    assert set(kinds(RunConfig.__annotations__["progress_bar"])) == {bool, type(None)}


# ---- issue 25: every range where it is parsed, and read back from a file (cause 9); paths as UTF-8 (cause 16);
# a family's own help of a common flag (cause 21) ----

@pytest.mark.parametrize("family, name, value, says", [
    (GANConfig, "beta1", 1.0, "argument --beta1: must be a number in [0, 1), got 1.0"),
    (GANConfig, "beta1", 1.5, "argument --beta1: must be a number in [0, 1), got 1.5"),
    (GANConfig, "beta1", float("nan"), "argument --beta1: must be a number in [0, 1), got nan"),
    (GANConfig, "batch_size", 1, "argument --batch_size: must be at least 2, got 1"),
    (RealNVPConfig, "temperature", 1e300, "argument --temperature: must be a number in (0, 100], got 1e+300"),
    (TrainConfig, "epochs", 2 ** 63, f"argument --epochs: must be at most 2**63 - 1 (a 64-bit integer), got {2 ** 63}"),
    (TrainConfig, "data_dir", "data\udcff", "argument --data_dir: 'data\\xff' is not valid UTF-8"),
    (TrainConfig, "log_dir", "runs\udcff", "argument --log_dir: 'runs\\xff' is not valid UTF-8"),
    (TrainConfig, "run_name", "r\udcff", "argument --run_name: 'r\\xff' is not valid UTF-8"),
])
def test_a_saved_setting_out_of_its_flags_range_is_refused(no_command_line, family, name, value, says):
    """What a checkpoint or args.json holds passes the same types as the command line (Flag.problem)."""
    with pytest.raises(UserError) as caught:
        family.check_saved({**DEFAULTS[family], name: value}, "last.pt, args")
    assert str(caught.value).startswith(f"last.pt, args: {says}") and "\n" not in str(caught.value)


@pytest.mark.parametrize("family, argv, says", [
    (GANConfig, ["--beta1", "1.0"], "argument --beta1: must be a number in [0, 1), got 1.0"),
    (GANConfig, ["--beta1", "-0.1"], "argument --beta1: must be a number in [0, 1), got -0.1"),
    (GANConfig, ["--batch_size", "1"], "argument --batch_size: must be at least 2, got 1"),
    (RealNVPConfig, ["--temperature", "1e300"], "argument --temperature: must be a number in (0, 100], got 1e300"),
    (TrainConfig, ["--batch_size", str(10 ** 30)], "argument --batch_size: must be at most 2**63 - 1"),
    (TrainConfig, ["--log_dir", "runs\udcff"], "argument --log_dir: 'runs\\xff' is not valid UTF-8"),
    (RealNVPConfig, ["--resume", "run\udcff"], "argument --resume: 'run\\xff' is not valid UTF-8"),
])
def test_the_parser_refuses_out_of_range_values_in_one_line(family, argv, says, capsys):
    with pytest.raises(SystemExit) as info:
        family.parse(argv, "x.py")
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(f"x.py: error: {says}") and err.count("\n") == 1, err


def test_the_ranges_edges_are_accepted():
    assert GANConfig.parse(["--beta1", "0"]).beta1 == 0.0 and GANConfig.parse(["--beta1", "0.999"]).beta1 == 0.999
    assert GANConfig.parse(["--batch_size", "2"]).batch_size == 2
    assert RealNVPConfig.parse(["--temperature", "100"]).temperature == 100.0
    assert TrainConfig.parse(["--epochs", str(2 ** 63 - 1)]).epochs == 2 ** 63 - 1


def test_a_familys_own_help_replaces_the_common_text():
    """HELP_OF: the 2019 models' --dataset is 8-bit MNIST (not the VAE's "with --bits 1"); the flags the GAN refuses
    say so in its --help."""
    vae, realnvp, gan = (" ".join(f.build_parser().format_help().split()) for f in FAMILIES)
    assert "mnist (2019: with --bits 1; 2022-2025: --bits 4)" in vae
    for text in (realnvp, gan):
        assert "--bits 1" not in text and "mnist (the 2019 assignment, 8-bit: --bits 8, the default)" in text
        assert "fp32 only" in text
    assert "its steps do not clip gradients" in gan and "off only" in gan
