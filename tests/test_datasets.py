import pytest
import torch

from pyro_bnn import datasets
from tests.image_files import write_idx, write_mnist
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


def test_mnist_split_is_seeded_scaled_and_complete(tmp_path):
    images = write_mnist(tmp_path)
    split = datasets.mnist(data_dir=tmp_path, num_train=15, seed=3)
    assert split.x_train.shape == (15, 784) and split.x_test.shape == (5, 784)
    assert split.y_train.dtype == torch.long
    again = datasets.mnist(data_dir=tmp_path, num_train=15, seed=3, flatten=False)
    assert again.x_train.shape == (15, 1, 28, 28)
    torch.testing.assert_close(again.x_train.reshape(15, -1), split.x_train)
    # every image once, pixels / 126, labels kept with their images
    rows = torch.cat([split.x_train, split.x_test]) * 126
    first = torch.as_tensor(images.reshape(20, -1), dtype=torch.float32)
    order = [int(torch.nonzero((first == r.round()).all(1))[0]) for r in rows]
    assert sorted(order) == list(range(20))
    assert torch.equal(torch.cat([split.y_train, split.y_test]), torch.tensor(order) % 10)


def test_mnist_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no image directory .*mnist.*t10k-images"):
        datasets.mnist(data_dir=tmp_path)
    write_mnist(tmp_path)
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a readable gzip file"):
        datasets.mnist(data_dir=tmp_path)
    write_idx(labels, [1, 2, 3])
    with pytest.raises(ValueError, match=r"images \(20, 28, 28\) and labels \(3,\) do not match"):
        datasets.mnist(data_dir=tmp_path)
    import gzip

    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x14abc"))
    with pytest.raises(ValueError, match="header promises 20 bytes"):
        datasets.mnist(data_dir=tmp_path)
    with pytest.raises(ValueError, match="num_train"):
        write_idx(labels, list(range(20)))
        datasets.mnist(data_dir=tmp_path, num_train=20)


def test_real_mnist_when_present():
    try:
        split = datasets.mnist()
    except FileNotFoundError as error:
        pytest.skip(f"MNIST absent: {error}")
    assert split.x_train.shape == (8000, 784) and split.x_test.shape == (2000, 784)
    assert set(split.y_train.unique().tolist()) == set(range(10))


def test_bbb_curve_trains_on_half_the_test_range():
    data = datasets.bbb_curve(seed=1)
    assert data.x_train.shape == (100, 1) and data.y_train.shape == (100,)
    assert 0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 0.5
    assert float(data.x_test.min()) < 0 and float(data.x_test.max()) > 1
    # y − x is the two sines plus noise: bounded by 0.6 + a few noise sds (sd 0.14)
    assert float((data.y_train - data.x_train[:, 0]).abs().max()) < 0.6 + 5 * 0.02**0.5
