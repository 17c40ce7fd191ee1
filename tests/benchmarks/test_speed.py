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
    }
    assert {"ms_per_gradient", "ess_per_s", "min_ess_test_predictions"} <= saved["nuts"]["3"].keys()
    assert saved["predict"]["rows"] == 500 and saved["predict"]["draws"] == 50
    assert set(saved["same_posterior"]) == {"compiled", "trace_elbo"}
    table = (tmp_path / "speed.md").read_text()
    assert "| measurement | pyro-bnn | reference | ratio |" in table
    assert "SVI step: pyro-bnn `meanfield`" in table and results["date"] in table


def test_protein_like_has_protein_shape():
    from benchmarks.speed.bench import protein_like

    data = protein_like(rows=1000)
    assert data.x_train.shape == (900, 9) and data.x_test.shape == (100, 9)
    assert abs(float(data.y_train.mean())) < 0.2
