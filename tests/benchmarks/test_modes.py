"""``bench modes``: the mode count and the bench with tiny settings (the target itself is
tested with the zoo, ``tests/zoo/test_mixture25.py``)."""

import json

import torch

from benchmarks.modes.bench import count_modes
from pyro_bnn.cli import main
from pyro_bnn.zoo.mixture25 import CENTRES


def test_count_modes():
    assert count_modes(CENTRES) == 25
    assert count_modes(CENTRES + 0.6) == 0  # 0.85 from every centre, beyond 3 sd
    assert count_modes(torch.tensor([[0.1, 0.1], [0.2, -0.1], [-1.0, -1.0]])) == 1


def test_bench_quick(tmp_path, capsys):
    assert main(["bench", "modes", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    document = json.loads((tmp_path / "results.json").read_text())
    assert {(r["method"], r["gradients"]) for r in document["records"]} == {
        ("sgld", 600),
        ("csgld", 600),
    }
    assert all(1 <= r["modes_visited"] <= 25 for r in document["records"])
    assert (tmp_path / "modes.png").stat().st_size > 0
    assert "| csgld |" in capsys.readouterr().out
