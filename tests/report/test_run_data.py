"""report/run_data.py: how every section names the data a run read, which data (dataset, bits) a run is on and the
refusal of runs on different data, and the results' real test images."""
import pytest

from conftest import generated_data
from dgmkit.errors import UserError
from run_data import data_key, data_name, describe_data, describe_run_data, real_test_images, same_data


def test_a_data_folder_is_named_by_its_images(tmp_path):
    fashion = generated_data(tmp_path / "fashion", 60, 12, seed=1)
    mnist = generated_data(tmp_path / "mnist", 30, 6, seed=2, folder="MNIST")
    assert describe_data(str(fashion)) == f"FashionMNIST subset: 60 train / 12 test images (`{fashion.as_posix()}`)"
    assert describe_data(str(mnist), "mnist") == f"MNIST subset: 30 train / 6 test images (`{mnist.as_posix()}`)"
    assert describe_run_data({"data_dir": str(fashion)}) == describe_data(str(fashion))
    assert describe_run_data({"data_dir": str(mnist), "dataset": "mnist"}, folder=False) == \
        "MNIST subset: 30 train / 6 test images"


def test_a_missing_folder_is_named_as_given(tmp_path):
    assert describe_data(str(tmp_path / "nowhere")) == f"`{(tmp_path / 'nowhere').as_posix()}`"
    assert describe_data(None) == "–"
    assert describe_run_data({}, folder=False) == "–"


def test_real_test_images_are_quantized(tmp_path):
    root = generated_data(tmp_path / "fashion", 20, 5, seed=3)
    images = real_test_images({"data_dir": str(root), "bits": 4})
    assert images.shape == (5, 28, 28) and images.min() >= 0 and images.max() <= 15
    assert real_test_images({"data_dir": str(tmp_path / "nowhere")}) is None
    assert real_test_images({}) is None


def a_run(args, evaluation=None, name="r", folder="/runs/r"):
    return {"args": args, "eval": evaluation, "name": name, "dir": folder}


def test_the_data_of_a_run_and_its_familys_defaults():
    """args.json's dataset and bits; records from before those flags get their family's defaults (the VAE's 4-bit
    FashionMNIST, RealNVP's and the GAN's 8-bit MNIST); eval_test.json's, where recorded, must agree."""
    assert data_key(a_run({"z_dim": 20})) == ("fashion_mnist", 4)
    assert data_key(a_run({"hidden_channels": 8})) == ("mnist", 8) == data_key(a_run({"latent_dim": 8}))
    assert data_key(a_run({"dataset": "mnist", "bits": 1}, {"dataset": "mnist", "bits": 1})) == ("mnist", 1)
    assert [data_name(k) for k in (("fashion_mnist", 4), ("mnist", 1), ("mnist", 8))] == [
        "4-bit FashionMNIST", "binary MNIST", "8-bit MNIST"]
    with pytest.raises(UserError, match=r"^/runs/r/eval_test.json evaluates 4-bit MNIST, but the run trained on "
                                        r"4-bit FashionMNIST \(args.json\); rerun evaluate.py on the run's own data$"):
        data_key(a_run({}, {"dataset": "mnist", "bits": 4}))
    for bad in ({"dataset": "cifar"}, {"bits": 9}, {"bits": "4"}, {"dataset": ["mnist"]}):
        with pytest.raises(UserError, match=r"^/runs/r/args.json: dataset .* is no dataset of part1"):
            data_key(a_run(bad))


def test_runs_on_different_data_are_refused_in_one_line():
    runs = [a_run({}, name="a"), a_run({"dataset": "fashion_mnist", "bits": 4}, name="b")]
    assert same_data(runs, "--x") == ("fashion_mnist", 4) and same_data([], "--x") is None
    with pytest.raises(UserError) as info:
        same_data([*runs, a_run({"dataset": "mnist", "bits": 1}, name="c")], "--x")
    assert str(info.value) == ("--x: `a` is on 4-bit FashionMNIST but `c` on binary MNIST (args.json, eval_test.json): "
                               "runs on different data (dataset or bits) are not compared; give runs on one dataset at "
                               "one bit depth")
