"""``bench dwp`` end to end with tiny settings on synthetic MNIST and notMNIST directories.

Nothing about accuracy is asserted (a hundred random images measure nothing); the stages,
the schema, resuming and the errors are.
"""

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.cards import markers
from benchmarks.dwp.bench import DWPBenchConfig, run_dwp_bench, table_summary, training_set
from pyro_bnn.cli import main
from pyro_bnn.dwp import DeepWeightPrior
from tests.image_files import write_mnist


@pytest.fixture
def image_dirs(tmp_path):
    write_mnist(tmp_path, name="mnist", n=120, seed=0)
    write_mnist(tmp_path, name="notmnist", n=120, seed=1)
    return tmp_path


def quiet(_message):
    pass


def test_dwp_bench_runs_every_stage_and_resumes(image_dirs, tmp_path):
    config = DWPBenchConfig.tiny(data_dir=str(image_dirs))
    out = tmp_path / "out"
    shipped = tmp_path / "package" / "data" / "dwp_notmnist.pt"
    document = run_dwp_bench(config, out=out, ship=shipped, progress=False, log=quiet)
    prior = DeepWeightPrior.load(out / "dwp_notmnist.pt")
    assert shipped.read_bytes() == (out / "dwp_notmnist.pt").read_bytes()  # --ship PATH
    assert {v.kernel_size for v in prior.layers.values()} == {5, 7}
    layers = document["prior"]["layers"]
    assert layers["conv1"]["kernels_total"] == 2 * 32
    assert layers["conv2"]["kernels_total"] == 2 * 32 * 128
    assert layers["conv2"]["vae_training_kernels"] == 500
    rows = document["table"]
    assert len(rows) == 3 * 2 * 2
    assert {r["method"] for r in rows} == {"dwp", "meanfield", "multiplicative"}
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    assert table_summary(rows)["dwp"][20][2] == 2
    train = [r["train_accuracy"] for r in rows if (r["prior"], r["size"]) == ("dwp", 20)]
    assert table_summary(rows, field="train_accuracy")["dwp"][20][0] == pytest.approx(
        sum(train) / 2
    )
    assert len(document["init"]["curves"]["dwp"][0]) == config.init_epochs + 1
    for figure in ("kernels.png", "init_curves.png"):
        assert (out / figure).stat().st_size > 0
    report = (out / "results.md").read_text()
    assert "| dwp | " in report and "Random-feature extraction" in report
    assert "Training accuracy of the same ensembles" in report

    # resuming: nothing is rerun, the prior file is kept
    before = (out / "dwp_notmnist.pt").stat().st_mtime_ns
    again = run_dwp_bench(config, out=out, progress=False, log=quiet)
    assert again["table"] == rows and (out / "dwp_notmnist.pt").stat().st_mtime_ns == before
    assert len(again["runs"]) == 2

    # the repository keeps only the shipped copy: a rerun resumes from it, learning nothing
    (out / "dwp_notmnist.pt").unlink()
    resumed = run_dwp_bench(config, out=out, stages=("prior",), ship=shipped, progress=False,
                            log=quiet)  # fmt: skip
    assert resumed["prior"] == document["prior"] and len(resumed["runs"]) == 3
    assert not (out / "dwp_notmnist.pt").exists()

    # other settings are refused rather than mixed into these results
    other = DWPBenchConfig.tiny(data_dir=str(image_dirs), fit_steps=4)
    with pytest.raises(ValueError, match=r"measured with other settings \(fit_steps\)"):
        run_dwp_bench(other, out=out, progress=False, log=quiet)
    assert json.loads((out / "results.json").read_text())["table"] == rows


def test_an_interrupted_table_is_dated_in_its_report(image_dirs, tmp_path, monkeypatch):
    """The run is on record from its start: cells saved before an interruption sit in a
    report that names the run's date and machine (the table stage resumes from them)."""
    import datetime

    import benchmarks.dwp.bench as bench

    config = DWPBenchConfig.tiny(data_dir=str(image_dirs))
    out = tmp_path / "out"
    run_dwp_bench(config, out=out, stages=("prior",), progress=False, log=quiet)
    real, calls = bench.run_table_cell, []

    def stops_after_one(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "run_table_cell", stops_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_dwp_bench(config, out=out, stages=("table",), progress=False, log=quiet)
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["table"]) == 1 and len(saved["runs"]) == 2
    assert saved["runs"][-1]["stages"] == ["table"] and saved["runs"][-1]["elapsed_s"] > 0
    title = (out / "results.md").read_text().splitlines()[0]
    assert datetime.date.today().isoformat() in title and "not run" not in title


def test_training_sets_are_seeded_and_shared_by_priors():
    x, y = torch.arange(100.0)[:, None], torch.arange(100)
    a = training_set(x, y, size=10, draw=0, seed=0)[1]
    assert torch.equal(a, training_set(x, y, size=10, draw=0, seed=0)[1])
    assert not torch.equal(a, training_set(x, y, size=10, draw=1, seed=0)[1])
    assert len(set(a.tolist())) == 10
    with pytest.raises(ValueError, match="needs a pool that large"):
        training_set(x, y, size=101, draw=0, seed=0)


def test_dwp_command_errors(tmp_path, capsys):
    out = str(tmp_path / "o")
    args = ["bench", "dwp", "--quick", "--no-progress", "--out", out]
    assert main([*args, "--data-dir", str(tmp_path)]) == 2
    assert "no image directory" in capsys.readouterr().err
    assert main([*args, "--stages", "table,warp"]) == 2
    assert "unknown stage(s) ['warp']" in capsys.readouterr().err
    card = tmp_path / "card.md"
    card.write_text("# a card without markers\n")
    assert main([*args, "--card", str(card)]) == 2
    assert markers("dwp")[0] in capsys.readouterr().err


def test_stratified_training_sets_have_equal_counts_per_class():
    """Atanov et al. draw exactly size/10 images per class; the remainder of a size that
    10 does not divide goes to distinct random classes. Draws differ by draw number and
    repeat for the same (seed, size, draw)."""
    pool_y = torch.arange(300) % 10
    pool_x = torch.arange(300).float()
    for size in (50, 23):
        x, y = training_set(pool_x, pool_y, size=size, draw=0, seed=0, stratified=True)
        counts = torch.bincount(y, minlength=10)
        assert int(counts.sum()) == size and set(counts.tolist()) <= {size // 10, size // 10 + 1}
        assert len(set(x.tolist())) == size  # without replacement
    a = training_set(pool_x, pool_y, size=50, draw=0, seed=0, stratified=True)[0]
    b = training_set(pool_x, pool_y, size=50, draw=1, seed=0, stratified=True)[0]
    assert torch.equal(a, training_set(pool_x, pool_y, size=50, draw=0, seed=0, stratified=True)[0])
    assert not torch.equal(a.sort().values, b.sort().values)
    scarce = torch.where((pool_y == 0) & (pool_x > 0), 1, pool_y)  # class 0: one image
    with pytest.raises(ValueError, match="class 0 has 1 pool images, 2 needed"):
        training_set(pool_x, scarce, size=20, draw=0, seed=0, stratified=True)


def test_the_vae_probe_retrains_one_layer_and_probes_its_density(tmp_path):
    from benchmarks.dwp.probes import SHRINKS
    from benchmarks.dwp.probes import main as probe
    from tests.test_dwp import tiny_prior

    prior_file, kernels, saved = tmp_path / "p.pt", tmp_path / "k.npy", tmp_path / "q.pt"
    tiny_prior().save(prior_file)
    np.save(kernels, 0.1 * np.random.default_rng(0).standard_normal((64, 5, 5)))
    out = tmp_path / "probes.jsonl"
    args = ["vae", str(prior_file), "--name", "t", "--kernels", str(kernels), "--save",
            str(saved), "--out", str(out), "--set", "hidden=3", "epochs=2"]  # fmt: skip
    assert probe(args) == 0
    row = json.loads(out.read_text())
    assert row["training_kernels"] == 64 and row["layer"] == "*conv2"
    curve = row["layers"]["*conv2"]["log_density_median"]
    assert list(curve) == [str(s) for s in SHRINKS]
    assert all(math.isfinite(v) for v in curve.values())
    retrained = DeepWeightPrior.load(saved)
    assert retrained.layers["*conv2"].config["hidden"] == 3
    assert retrained.layers["*conv1"].config == tiny_prior().layers["*conv1"].config


def test_the_prior_stage_learns_from_kernel_files_without_source_nets(tmp_path):
    """``source_kernels``: the VAEs see exactly the files' kernels (no norm filter: a file
    holds kept kernels), no source net is trained, the record names each file by its
    SHA-256, and the report says where the kernels came from."""
    rng = np.random.default_rng(0)
    files = []
    for name, k, n in (("c7.npy", 7, 40), ("c5.npy", 5, 60)):
        np.save(tmp_path / name, rng.normal(size=(n, 1, k, k)).astype(np.float32))
        files.append(str(tmp_path / name))
    config = DWPBenchConfig.tiny(source_kernels=tuple(files))  # the default filter is on
    document = run_dwp_bench(config, out=tmp_path / "out", stages=("prior",), progress=False,
                             log=quiet)  # fmt: skip
    prior = document["prior"]
    assert prior["source_test_accuracy"] == [] and document["config"]["source_kernels"] == files
    assert [e["kernels_total"] for e in prior["layers"].values()] == [40, 60]
    assert [e["kernels_dropped"] for e in prior["layers"].values()] == [0, 0]
    assert [e["source_file_sha256"] for e in prior["layers"].values()] == [
        hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files
    ]
    assert [e["kernel_size"] for e in prior["layers"].values()] == [7, 5]
    report = (tmp_path / "out" / "results.md").read_text()
    assert f"Kernels read from {files[0]} and {files[1]} (no source nets)" in report
    assert "all kept (no norm filter)" in report and "were dropped" not in report
    assert "source nets" not in report.split("Prior stage")[1].splitlines()[0]
    with pytest.raises(ValueError, match=r"one \.npy file per conv layer"):
        DWPBenchConfig.tiny(source_kernels=(files[0],))


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: np.save(p, np.ones((4, 3, 5, 5))), r"shape \(4, 3, 5, 5\); expected"),
        (lambda p: np.save(p, np.ones((4, 7, 7))), r"shape \(4, 7, 7\)"),
        (lambda p: np.save(p, np.zeros((0, 5, 5))), "with n > 0"),
        (lambda p: np.save(p, np.full((2, 5, 5), np.nan)), "NaN or inf"),
        (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "not a readable .npy"),
        (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "not a readable .npy"),
    ],
)
def test_a_bad_kernel_file_gets_an_error_naming_it(tmp_path, write, message):
    from benchmarks.dwp.bench import read_kernel_file

    path = tmp_path / "k.npy"
    write(path)
    with pytest.raises(ValueError, match=message) as error:
        read_kernel_file(path, kernel_size=5)
    assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="no kernel file"):
        read_kernel_file(tmp_path / "missing.npy", kernel_size=5)
    with pytest.raises(ValueError, match=r"must be a \.npy array"):
        read_kernel_file(tmp_path / "k.txt", kernel_size=5)
