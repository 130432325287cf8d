"""dgmkit/runs/schema.py: check_fields on records written by hand: required fields present and not null, each present
field of its type (a bool is not a number, a list holds numbers only, null stands for "none"), the error one line
naming the file and the field."""
import pytest

from dgmkit.errors import UserError
from dgmkit.runs.schema import EVAL_FIELDS, HISTORY_FIELDS, METRICS_FIELDS, NUMBER, check_fields

FIELDS = {"bpd": NUMBER, "epoch": int, "device": str, "per_class": dict, "per_image": list}


def test_a_record_of_the_right_types_passes():
    record = {"bpd": 1, "epoch": 3, "device": "cpu", "per_class": {}, "per_image": [1, 2.5], "other": object()}
    check_fields(record, FIELDS, "x.json", required=("bpd", "epoch"))  # an int is a number; unknown keys are left
    check_fields({"bpd": None, "per_image": None}, FIELDS, "x.json")  # null: "none", e.g. the SE of one image
    check_fields({}, FIELDS, "x.json")  # absent fields are not checked unless required


@pytest.mark.parametrize("record, says", [
    ({"epoch": 3}, "x.json lacks 'bpd'; the file is damaged or from another program"),
    ({"bpd": None, "epoch": 3}, "x.json lacks 'bpd'"),  # present but null is lacking too
])
def test_a_required_field_must_be_present_and_not_null(record, says):
    with pytest.raises(UserError) as info:
        check_fields(record, FIELDS, "x.json", required=("bpd", "epoch"))
    assert str(info.value).startswith(says) and "\n" not in str(info.value)


@pytest.mark.parametrize("name, value, says", [
    ("bpd", "1.52", "x.json: 'bpd' is '1.52', not a number; the file is damaged"),
    ("bpd", True, "x.json: 'bpd' is 'True', not a number"),  # bool is an int in Python, never a number here
    ("epoch", 2.0, "x.json: 'epoch' is '2.0', not an integer"),
    ("epoch", False, "x.json: 'epoch' is 'False', not an integer"),
    ("device", 0, "x.json: 'device' is '0', not a string"),
    ("per_class", [], "x.json: 'per_class' is '[]', not an object"),
    ("per_image", [1.0, "2"], "x.json: 'per_image' is \"[1.0, '2']\", not a list of numbers"),
    ("per_image", [1.0, True], "x.json: 'per_image' is '[1.0, True]', not a list of numbers"),
    ("per_image", {"a": 1}, "x.json: 'per_image' is \"{'a': 1}\", not a list of numbers"),
])
def test_a_field_of_another_type_is_named(name, value, says):
    with pytest.raises(UserError) as info:
        check_fields({name: value}, FIELDS, "x.json")
    assert str(info.value) == says if says.endswith("damaged") else str(info.value).startswith(says)


def test_a_long_value_is_cut_to_40_characters():
    with pytest.raises(UserError) as info:
        check_fields({"device": ["x" * 100]}, FIELDS, "x.json")
    assert str(info.value).startswith("x.json: 'device' is " + repr(str(["x" * 100])[:40]) + ", not a string")


def test_the_run_files_fields():
    """The tables of the run's files: what history.jsonl, metrics.json and eval_<split>.json hold."""
    assert HISTORY_FIELDS["epoch"] is int and HISTORY_FIELDS["val_bpd"] == NUMBER
    assert {f"{split}_{name}" for split in ("train", "val") for name in ("bpd", "rec_nats", "kl_nats")} <= set(
        HISTORY_FIELDS)
    assert METRICS_FIELDS["test_bpd"] == NUMBER and METRICS_FIELDS["best_epoch"] is int
    assert EVAL_FIELDS["per_image_iw_bpd"] is list and EVAL_FIELDS["per_class"] is dict
    check_fields({"epoch": 1, "seconds": 0.5, "train_bpd": 3.9, "val_bpd": 3.8}, HISTORY_FIELDS, "history.jsonl")
    with pytest.raises(UserError, match="'best_epoch' is '2.0', not an integer"):
        check_fields({"test_bpd": 3.9, "best_epoch": 2.0}, METRICS_FIELDS, "metrics.json")
