import pytest
import torch

from pyro_bnn import datasets


def test_gap_regression_has_no_training_inputs_in_the_gap():
    data = datasets.gap_regression(seed=3)
    assert not data.in_gap(data.x_train).any()
    assert data.in_gap(data.x_test).any()
    assert data.x_train.dtype == torch.float32 and data.y_train.shape == (80,)


@pytest.mark.parametrize("name,classes", [("digits", 10), ("breast_cancer", 2), ("diabetes", None)])
def test_sklearn_datasets(name, classes):
    split = datasets.sklearn_dataset(name)
    assert split.x_train.mean(0).abs().max() < 1e-4
    if classes is None:
        assert split.y_train.dtype == torch.float32
    else:
        assert int(split.y_train.max()) == classes - 1


def test_data_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
    assert datasets.data_dir() == tmp_path
    assert datasets.data_dir("elsewhere").name == "elsewhere"
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.sklearn_dataset("iris")
