"""report/run_data.py: how every section names the data a run read, and the results' real test images."""
from conftest import generated_data
from run_data import describe_data, describe_run_data, real_test_images


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
