"""``pyro-bnn bench modes``: cyclical vs plain SGLD on the mixture of 25 Gaussians of
Zhang et al. (2020, §5.1): how many modes each visits for the same number of gradients.

The target is the zoo's ``gaussian-mixture-25`` (:mod:`pyro_bnn.zoo.mixture25`): 25
equally weighted Gaussians with covariance 0.03·I on the grid {−4, −2, 0, 2, 4}², as in
the authors' ``experiments/mog25.m``, started uniformly on [−10, 10]². The samplers are the
library's ``sgld`` and ``csgld`` on that model's potential, with the authors' settings
translated to our step convention (θ ← θ − ε/2 ∇U + N(0, ε), so ε = 2η):

- ``sgld``: ε_t = 2 · 0.043 · t^(−0.55) (the authors hold η for the first 500 steps);
- ``csgld``: 30 cosine cycles from ε_0 = 2 · 0.07 over the same 50,000 steps, draws kept
  after the first 50 steps of each cycle (``exploration`` = 50 / cycle length).

Deviation: the authors add N(0, I) noise to every gradient; here the gradients are exact
(the target has no data to subsample). A mode counts as visited when a kept draw falls
within 3 standard deviations (3·√0.03 ≈ 0.52) of its centre.

Example:
    >>> import torch
    >>> count_modes(torch.tensor([[0.1, 0.0], [4.0, 4.2], [1.0, 1.0]]), radius=0.5)
    2
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks import harness
from pyro_bnn.diagnostics import SamplingWarning
from pyro_bnn.infer import fit
from pyro_bnn.zoo.mixture25 import CENTRES, VARIANCE, MixtureOf25, uniform_start

__all__ = ["ModesConfig", "count_modes", "format_markdown", "main", "run_modes"]


def count_modes(draws: torch.Tensor, *, radius: float = 3 * math.sqrt(VARIANCE)) -> int:
    """How many of the 25 centres have a draw (rows of ``draws``, 2-D) within ``radius``."""
    distance = torch.cdist(draws.reshape(-1, 2).to(CENTRES.dtype), CENTRES)
    return int((distance < radius).any(0).sum())


@dataclass(frozen=True, kw_only=True)
class ModesConfig(harness.Settings):
    """The authors' schedule; ``seeds``: independent runs (one chain each) per method."""

    num_steps: int = 50_000
    num_cycles: int = 30
    sgld_step_size: float = 2 * 0.043
    sgld_decay_power: float = 0.55
    csgld_step_size: float = 2 * 0.07
    csgld_burn_in_per_cycle: int = 50
    seeds: tuple[int, ...] = (0, 1, 2, 3)

    @classmethod
    def tiny_settings(cls) -> dict[str, Any]:
        return dict(num_steps=600, num_cycles=3, seeds=(0,))

    def options(self, method: str) -> dict[str, Any]:
        if method == "sgld":
            return dict(num_samples=self.num_steps, burn_in=0, step_size=self.sgld_step_size,
                        decay_power=self.sgld_decay_power)  # fmt: skip
        cycle = self.num_steps // self.num_cycles
        return dict(num_cycles=self.num_cycles, cycle_length=cycle,
                    exploration=self.csgld_burn_in_per_cycle / cycle,
                    step_size=self.csgld_step_size)  # fmt: skip


METHODS = ("sgld", "csgld")


def run_modes(config: ModesConfig, *, out: Path, progress: bool = True) -> dict[str, Any]:
    """Run every (method, seed), write ``results.json``, ``results.md`` and ``modes.png``."""
    out.mkdir(parents=True, exist_ok=True)
    x, y = torch.zeros(1, 1), torch.zeros(1)
    records, first = [], {}
    with tqdm(total=len(METHODS) * len(config.seeds), desc="bench modes",
              disable=not progress) as bar:  # fmt: skip
        for method in METHODS:
            for seed in config.seeds:
                start = time.perf_counter()
                with warnings.catch_warnings():  # one chain cannot mix over 25 modes
                    warnings.simplefilter("ignore", SamplingWarning)
                    post = fit(MixtureOf25(), x, y, method=method, backend="jit",
                               init_strategy=uniform_start, progress_bar=False,
                               seed=seed, **config.options(method))  # fmt: skip
                theta = post.draws["theta"].reshape(-1, 2)
                records.append({
                    "method": method, "seed": seed, "modes_visited": count_modes(theta),
                    "gradients": int(post.timings["gradients"]), "draws": len(theta),
                    "wall_s": time.perf_counter() - start,
                })  # fmt: skip
                first.setdefault(method, theta)
                bar.update()
    document = {
        "config": config.record(),
        "records": records,
        "date": date.today().isoformat(),
        "machine": harness.machine(),
    }
    harness.save(out, document, format_markdown(document))
    _figure(first, out / "modes.png")
    return document


def format_markdown(document: dict[str, Any]) -> str:
    """The report of a ``results.json`` document (the machine where it was recorded)."""
    config = document["config"]
    where = f" on {document['machine']}" if "machine" in document else ""
    lines = [
        "# Modes of the 25-Gaussian mixture visited, cyclical vs plain SGLD",
        "",
        f"Measured {document['date']}{where}; {config['num_steps']:,} gradients per run, "
        f"one chain per seed, seeds ({', '.join(map(str, config['seeds']))}).",
        "",
        *harness.table_header(
            "method", "modes visited (of 25), per seed", "mean", "draws kept per run"
        ),
    ]
    for method in METHODS:
        rows = [r for r in document["records"] if r["method"] == method]
        counts = [r["modes_visited"] for r in rows]
        lines.append(harness.table_row(
            method, ", ".join(map(str, counts)), f"{sum(counts) / len(counts):.1f}",
            f"{rows[0]['draws']:,}",
        ))  # fmt: skip
    return "\n".join(lines) + "\n"


def _figure(draws: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(-6, 6, 200)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    density = torch.exp(-(torch.cdist(points, CENTRES) ** 2) / (2 * VARIANCE)).sum(-1)
    fig, axes = plt.subplots(1, len(draws), figsize=(5 * len(draws), 5))
    for ax, (method, theta) in zip(axes, draws.items(), strict=True):
        ax.contour(xx, yy, density.reshape(200, 200), levels=5, colors="0.7", linewidths=0.5)
        shown = theta[:: max(1, len(theta) // 5000)]
        ax.scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.4)
        ax.set(title=f"{method}: {count_modes(theta)} of 25 modes", xlim=(-6, 6), ylim=(-6, 6))
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    return harness.command(
        "modes", "cyclical vs plain SGLD: modes of a 25-Gaussian mixture visited"
    )


def _command(args: argparse.Namespace) -> int:
    config = ModesConfig.tiny() if args.quick else ModesConfig()
    document = run_modes(config, out=Path(args.out), progress=not args.no_progress)
    print(format_markdown(document))
    print(f"written to {args.out}/results.json, results.md and modes.png")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pyro-bnn bench modes …`` / ``python -m benchmarks.modes …``."""
    return harness.main(build_parser(), _command, argv)
