"""``bench dwp`` end to end with tiny settings on synthetic MNIST and notMNIST directories.

Nothing about accuracy is asserted (a hundred random images measure nothing); the stages,
the schema, resuming and the errors are.
"""

import json
import math

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
    import numpy as np

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
