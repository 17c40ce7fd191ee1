"""The speed bench runs end to end in tiny settings and writes its JSON and table.

Timings are never asserted here: speed is claimed only from the bench's own output.
"""

import json

from benchmarks.speed.bench import SpeedConfig, run_speed


def test_speed_bench_smoke(tmp_path):
    results = run_speed(SpeedConfig.tiny(numpyro=False), out=tmp_path)
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["svi_ms_per_step"].keys() == {
        "floor_adam",
        "hand_written_bbb",
        "pyro_bnn_meanfield",
        "pyro_bnn_meanfield_inductor",
        "pyro_trace_elbo_autonormal_equivalent",
        "pyro_bnn_dvi",
        "pyro_bnn_dvi_pyro",
    }
    assert saved["sgmcmc_ms_per_step"].keys() == {"sghmc", "sghmc_inductor"}
    assert {"ms_per_gradient", "ess_per_s", "min_ess_test_predictions"} <= saved["nuts"]["3"].keys()
    assert saved["predict"]["rows"] == 500 and saved["predict"]["draws"] == 50
    assert set(saved["same_posterior"]) == {"compiled", "trace_elbo"}
    table = (tmp_path / "speed.md").read_text()
    assert "| measurement | pyro-bnn | reference | ratio |" in table
    assert "SVI step: pyro-bnn `meanfield`" in table and results["date"] in table
    assert "SG-MCMC step: pyro-bnn `sghmc`" in table
    assert 'SVI step: pyro-bnn `dvi`, `backend="pyro"`' in table


def test_protein_like_has_protein_shape():
    from benchmarks.speed.bench import protein_like

    data = protein_like(rows=1000)
    assert data.x_train.shape == (900, 9) and data.x_test.shape == (100, 9)
    assert abs(float(data.y_train.mean())) < 0.2


def test_a_ratio_needs_both_of_its_measurements(tmp_path):
    """A reference the bench could not time (NumPyro's sampling swallowed by its compile
    time, once reported as 0.000 ms and a ratio of 7.8·10⁹) prints "not measured" and no
    ratio; so does one of ours."""
    from benchmarks.speed.bench import _row, format_markdown

    results = run_speed(SpeedConfig.tiny(numpyro=False), out=tmp_path)
    results["numpyro"] = {
        "svi_step_ms": None,
        "nuts": {"3": {"not_measured": "its warm run took 1e-05 s, under 0.01 s"}},
    }
    table = format_markdown(results)
    numpyro_rows = [
        line for line in table.splitlines() if line.startswith("|") and "NumPyro" in line
    ]
    assert numpyro_rows and all("not measured | no ratio |" in r for r in numpyro_rows)
    assert _row("x", None, " ms", "ref", 2.0) == "| x | not measured | ref 2.000 ms | no ratio |"
    assert _row("x", 1.0, " ms", "ref", 2.0) == "| x | 1.000 ms | ref 2.000 ms | 0.50 |"
