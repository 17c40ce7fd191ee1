"""``bench modes``: the target, the mode count, and the bench with tiny settings."""

import json
import math

import torch

from pyro_bnn.bench.modes import CENTRES, VARIANCE, MixtureOf25, count_modes
from pyro_bnn.cli import main
from pyro_bnn.potential import flat_potential


def test_the_target_is_the_equal_mixture_of_25_gaussians():
    """The model's potential at θ is −log Σ_k (1/25) N(θ; μ_k, 0.03 I) (the data term is
    constant in θ), computed here directly."""
    x, y = torch.zeros(3, 1), torch.zeros(3)
    potential = flat_potential(MixtureOf25(), x, y, backend="eager")
    data_term = -torch.distributions.Normal(0.0, 1.0).log_prob(y).sum()
    for theta in (torch.tensor([0.0, 0.0]), torch.tensor([1.0, -3.0]), torch.tensor([4.1, 2.0])):
        squared = ((theta - CENTRES) ** 2).sum(-1)
        log_components = -squared / (2 * VARIANCE) - math.log(2 * math.pi * VARIANCE)
        expected = -(torch.logsumexp(log_components, 0) - math.log(25)) + data_term
        torch.testing.assert_close(potential(theta), expected, rtol=1e-5, atol=1e-4)


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
