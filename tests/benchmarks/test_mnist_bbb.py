"""``bench mnist-bbb`` end to end with tiny settings on a synthetic MNIST directory.

Nothing about accuracy is asserted (a few hundred random images measure nothing); the
schema, the selection on validation and the pruning table are.
"""

import json

import pytest

from benchmarks.mnist_bbb.bench import PRUNE_FRACTIONS, MnistBBBConfig, run_mnist_bbb
from pyro_bnn.cli import main
from tests.image_files import write_mnist


def test_mnist_bbb_bench_writes_tables_and_figure(tmp_path):
    write_mnist(tmp_path, n=200, seed=0)
    config = MnistBBBConfig.tiny(data_dir=str(tmp_path), batch_size=32)
    report = run_mnist_bbb(config, out=tmp_path / "out", progress=False)
    assert set(report["methods"]) == {
        "sgd", "mcdropout", "bbb_gaussian", "bbb_mixture", "ensemble", "laplace", "swag",
        "multiswag",
    }  # fmt: skip
    laplace = report["methods"]["laplace"]
    assert {"map_test_error", "curvature_s", "curvature_mb", "log_marginal_likelihood"} <= set(
        laplace
    )
    assert all({"test_nll", "test_ece", "date"} <= set(e) for e in report["methods"].values())
    mixture = report["methods"]["bbb_mixture"]
    assert len(mixture["validation_errors"]) == len(config.mixture_grid)
    best = min(mixture["validation_errors"], key=lambda c: c["validation_error"])
    assert mixture["chosen"] == best["setting"]
    assert [p["fraction"] for p in report["pruning"]] == list(PRUNE_FRACTIONS)
    assert 0 < report["local_reparameterization"]["ratio"]
    assert report["n_fit"] == 120 and report["n_validation"] == 40 and report["n_test"] == 40
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["methods"].keys() == report["methods"].keys()
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| bbb_mixture | pi=" in table and "weights removed by SNR" in table
    assert "last-layer KFAC Laplace" in table
    assert (tmp_path / "out" / "weights.png").stat().st_size > 0


def test_a_run_of_some_methods_keeps_the_others(tmp_path):
    write_mnist(tmp_path, n=200, seed=0)
    config = MnistBBBConfig.tiny(data_dir=str(tmp_path), batch_size=32)
    out = tmp_path / "out"
    first = run_mnist_bbb(config, out=out, methods=("sgd", "bbb_mixture"), progress=False)
    again = run_mnist_bbb(config, out=out, methods=("ensemble",), progress=False)
    assert list(again["methods"]) == ["sgd", "bbb_mixture", "ensemble"]
    assert again["methods"]["sgd"] == first["methods"]["sgd"]
    assert again["pruning"] == first["pruning"]
    assert len(again["methods"]["ensemble"]["validation_errors"]) == 1
    changed = MnistBBBConfig.tiny(data_dir=str(tmp_path), batch_size=32, sgd_lrs=(0.1,))
    with pytest.raises(ValueError, match="method sgd measured with other settings"):
        run_mnist_bbb(changed, out=out, methods=("ensemble",), progress=False)


def test_mnist_bbb_command_reports_a_missing_directory(tmp_path, capsys):
    assert main(["bench", "mnist-bbb", "--quick", "--data-dir", str(tmp_path)]) == 2
    assert "no image directory" in capsys.readouterr().err
