import pytest
import torch

from pyro_bnn import datasets
from tests.uci_files import write_uci


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


def test_uci_loader_standardises_with_training_statistics(tmp_path):
    table = write_uci(tmp_path)
    split = datasets.uci("toy", 0, data_dir=tmp_path)
    assert datasets.uci_num_splits("toy", data_dir=tmp_path) == 1
    assert split.x_train.shape == (9, 2) and split.x_test.shape == (3, 2)
    train = torch.as_tensor(table[:9], dtype=torch.float32)
    torch.testing.assert_close(split.x_train[:, 0].mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    assert torch.all(split.x_train[:, 1] == 0)  # the constant column: centred, not divided by 0
    assert split.y_std == pytest.approx(float(train[:, 2].std(unbiased=False)), rel=1e-5)
    # back in original units
    original = split.y_test * split.y_std + split.y_mean
    torch.testing.assert_close(original, torch.as_tensor(table[9:, 2], dtype=torch.float32))


def test_uci_loader_errors_name_the_path_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no UCI dataset directory .*uci/toy.*data.txt"):
        datasets.uci("toy", 0, data_dir=tmp_path)
    write_uci(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"index_train_3.txt.*index_features.txt"):
        datasets.uci("toy", 3, data_dir=tmp_path)
    (tmp_path / "uci" / "toy" / "index_test_0.txt").write_text("40\n")
    with pytest.raises(ValueError, match=r"test indices outside 0\.\.11"):
        datasets.uci("toy", 0, data_dir=tmp_path)
