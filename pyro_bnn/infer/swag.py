"""SWA, SWAG and MultiSWAG (Izmailov et al. 2018; Maddox et al. 2019; Wilson & Izmailov
2020) on the model's flat minibatch potential.

A chain starts from ``map``'s fit, then runs SGD with momentum on the per-row potential
U_B(θ)/N (:mod:`pyro_bnn.potential`, the minibatch log-likelihood scaled to the dataset, so
Pyro's model is the only definition of the objective): ``burn_in_epochs`` whose learning
rate anneals from ``lr`` to ``swa_lr`` (``torch.optim.swa_utils.SWALR``), then
``swa_epochs`` at ``swa_lr`` (``lr_schedule="constant"``) or in cycles that fall linearly
from ``lr`` to ``swa_lr`` within each epoch (``"cyclical"``). At the end of each SWA epoch
it collects the iterate: the running mean θ̄ (``torch.optim.swa_utils.AveragedModel``),
the running second moment, and the last ``rank`` deviations D from the running mean.

- ``swa``: θ̄ alone, a point estimate;
- ``swag``: N(θ̄, ½(Σ_diag + DDᵀ/(K − 1))) with Σ_diag = mean(θ²) − θ̄², its draws scaled
  by √``scale`` (the authors' defaults: K = 20, scale 0.5, 30 draws);
- ``multiswag``: ``num_members`` SWAG chains from independent MAP fits; the mixture of
  chains is what the Posterior holds anyway.

A learning rate that sends the iterates away (a non-finite gradient, or a potential far
above the MAP's at the collected iterates) is an error or a warning naming ``swa_lr``.

Example:
    >>> import torch
    >>> from pyro_bnn import fit, zoo
    >>> model = zoo.build("bayesian-linear-regression", in_features=1, noise_scale=0.5)
    >>> x = torch.randn(60, 1); y = 2 * x[:, 0]
    >>> post = fit(model, x, y, method="swag", num_steps=300, swa_epochs=25, batch_size=10,
    ...            progress_bar=False, seed=0)
    >>> post.draws["linear.weight"].shape
    torch.Size([1, 30, 1, 1])
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel
from tqdm import tqdm

from pyro_bnn.diagnostics import data_scale, loss_diagnostics, potential_diagnostics
from pyro_bnn.infer.chains import Chain
from pyro_bnn.infer.sgmcmc import _minibatches
from pyro_bnn.infer.svi import SVIOptions, fit_map
from pyro_bnn.likelihoods import ScaleDataPlate
from pyro_bnn.potential import Potential, flat_layout

__all__ = [
    "MultiSWAGOptions",
    "SWAGOptions",
    "SWAGState",
    "SWAOptions",
    "run_swag_chain",
]

LR_SCHEDULES = ("constant", "cyclical")


@dataclass(frozen=True, kw_only=True)
class SWAOptions(SVIOptions):
    """Options of ``swa``: the MAP fit's (``map``'s schedule), then SGD with ``momentum``
    on the per-row potential in minibatches of ``swa_batch_size`` rows (at most the data;
    each a fresh random subset), ``burn_in_epochs`` annealing the learning rate from
    ``burn_in_lr`` (default 10 × ``swa_lr``) to ``swa_lr``, then ``swa_epochs`` collected
    once each, at a ``"constant"`` rate or ``"cyclical"`` (from ``burn_in_lr`` down to
    ``swa_lr`` within each epoch). ``backend`` also builds the SGD potential.

    ``swa_lr=None`` (the default) sets it to 0.1/λ, λ the largest eigenvalue of the
    per-row curvature at the MAP (the GGN of the likelihood plus the prior's, by power
    iteration): a rate that suits one model cannot suit another whose noise is ten times
    smaller (its curvature is a hundred times larger), and SGD with momentum β diverges
    above 2(1 + β)/λ. The rate used is ``posterior.diagnostics["swa_lr"]``."""

    swa_lr: float | None = None
    burn_in_lr: float | None = None
    momentum: float = 0.9
    swa_batch_size: int = 128
    burn_in_epochs: int = 10
    swa_epochs: int = 50
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_choice("lr_schedule", LR_SCHEDULES)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    @classmethod
    def allow_zero(cls) -> frozenset[str]:
        return super().allow_zero() | {"momentum", "burn_in_epochs"}

    @property
    def draws_per_chain(self) -> int:
        return 1


@dataclass(frozen=True, kw_only=True)
class SWAGOptions(SWAOptions):
    """Options of ``swag``: those of ``swa``, the ``rank`` K of the deviation matrix,
    ``scale`` of the covariance, and ``num_draws``."""

    rank: int = 20
    scale: float = 0.5
    num_draws: int = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 2:
            raise ValueError(f"rank must be at least 2 (DDᵀ/(K − 1)), got {self.rank}")

    @property
    def draws_per_chain(self) -> int:
        return self.num_draws


@dataclass(frozen=True, kw_only=True)
class MultiSWAGOptions(SWAGOptions):
    """Options of ``multiswag``: ``num_members`` SWAG runs (chains) from independent MAP
    fits (instead of ``num_chains``)."""

    num_members: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_chains != 1:
            raise ValueError("multiswag's chains are its members: give num_members")

    @property
    def chains(self) -> int:
        return self.num_members


class _Flat(nn.Module):
    """θ as a module, for ``AveragedModel``."""

    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.clone())


@dataclass
class SWAGState:
    """A chain's SWAG moments on the flat unconstrained θ (laid out as the model's
    :class:`~pyro_bnn.potential.FlatLayout`): the mean θ̄, the second moment, the last K
    deviations (K, P) and the number of collected iterates."""

    mean: torch.Tensor
    second_moment: torch.Tensor
    deviations: torch.Tensor
    collected: int

    @property
    def diagonal_variance(self) -> torch.Tensor:
        """Σ_diag = mean(θ²) − θ̄², floored at zero (rounding)."""
        return (self.second_moment - self.mean**2).clamp_min(0)

    @property
    def low_rank_covariance(self) -> torch.Tensor:
        """DDᵀ/(K − 1), (P, P)."""
        d = self.deviations
        return d.T @ d / max(len(d) - 1, 1)

    def sample(self, n: int, *, scale: float) -> torch.Tensor:
        """n draws of N(θ̄, scale · ½(Σ_diag + DDᵀ/(K − 1))), (n, P)."""
        k = len(self.deviations)
        z1 = torch.randn(n, len(self.mean), dtype=self.mean.dtype)
        z2 = torch.randn(n, k, dtype=self.mean.dtype)
        spread = z1 * self.diagonal_variance.sqrt() / math.sqrt(2)
        spread = spread + z2 @ self.deviations / math.sqrt(2 * max(k - 1, 1))
        return self.mean + math.sqrt(scale) * spread


def _learning_rates(
    options: SWAOptions, swa_lr: float, steps_per_epoch: int
) -> Callable[[int, int], float]:
    """The SWA phase's rate at (epoch of the SWA phase, step within the epoch)."""
    high = options.burn_in_lr or 10 * swa_lr

    def rate(epoch: int, step: int) -> float:
        if options.lr_schedule == "constant":
            return swa_lr
        fraction = step / max(steps_per_epoch - 1, 1)
        return high + (swa_lr - high) * fraction

    return rate


def curvature_rate(
    model, values: dict[str, torch.Tensor], x, y, *, iterations: int = 30, rows: int = 1000
) -> float:
    """0.1/λ with λ the largest eigenvalue of the per-row curvature (GGN of the likelihood
    plus the prior's diagonal, over the real-valued sites) at ``values``, by power
    iteration on GGN-vector products over an evenly spaced subset of at most ``rows`` rows
    (the per-row curvature is an average over rows)."""
    from pyro_bnn.curvature import PointModel, real_sites

    real, _, _ = real_sites(model, x, y)
    point = PointModel(model, values, real)
    pick = torch.linspace(0, len(x) - 1, min(len(x), rows)).round().long().unique()
    matvec = point.ggn_matvec(x[pick], y[pick])
    prior = float(point.prior_curvature(x, full=False).clamp_min(0).max())
    vector = torch.randn(point.size, dtype=torch.float64)
    value = 0.0
    for _ in range(iterations):
        vector = vector / vector.norm()
        product = matvec(vector)
        value = float(vector @ product)
        vector = product
    return 0.1 / (value / len(pick) + prior / len(x))


def run_swag_chain(
    model: Callable, x: torch.Tensor, y: torch.Tensor, *, name: str, seed: int,
    options: SWAOptions, shared: dict[str, Any], progress_bar: bool,
) -> Chain:  # fmt: skip
    """One SWA/SWAG run: the MAP, burn-in, the collected epochs, and the draws."""
    began = time.perf_counter()
    values, losses = fit_map(model, x, y, name=f"{name} (MAP)", options=options, shared=shared,
                             progress_bar=progress_bar)  # fmt: skip
    map_s = time.perf_counter() - began
    if "swag_potential" not in shared:
        scaled = ScaleDataPlate(len(x))(model)
        layout = flat_layout(scaled, x, y)
        if layout is None:
            raise ValueError(f"{name} needs a model whose latent sites all sit outside plates")
        shared["swag_potential"] = Potential(scaled, x, y, backend=options.backend,
                                             layout=layout)  # fmt: skip
    potential = shared["swag_potential"]
    layout = potential.layout
    began = time.perf_counter()
    swa_lr = options.swa_lr or curvature_rate(model, values, x, y)
    state, stats, start_energy = _sgd(potential, layout.flatten(values), x, y, name=name,
                                      options=options, swa_lr=swa_lr,
                                      progress_bar=progress_bar)  # fmt: skip
    diagnostics, found = loss_diagnostics(losses, method=f"{name} (MAP)")
    more, runaway = potential_diagnostics(
        start_energy, np.asarray(stats["potential"]), groups=1, dim=layout.size, method=name,
        remedy=f"the SGD phase left the MAP's basin: lower swa_lr (now {swa_lr:g})",
    )  # fmt: skip
    diagnostics.update(more, swa_lr=swa_lr)
    if isinstance(options, SWAGOptions):
        theta = state.sample(options.num_draws, scale=options.scale)
    else:
        theta = state.mean[None]
    if not bool(torch.isfinite(theta).all()):
        raise FloatingPointError(
            f"{name}: the collected iterates are not finite; lower swa_lr (now "
            f"{swa_lr:g}), or check the scale of {data_scale(x, y)}"
        )
    draws = {k: v.detach()[None] for k, v in layout.constrain(theta).items()}
    return Chain(
        draws=draws, losses=losses, diagnostics=diagnostics, warnings=found + runaway,
        timings={"steps_s": map_s, "swa_s": time.perf_counter() - began,
                 "steps": len(losses)},
        state=state,
    )  # fmt: skip


def _sgd(potential, theta0, x, y, *, name, options: SWAOptions, swa_lr: float,
         progress_bar: bool):  # fmt: skip
    """The SGD phases from θ₀; the SWAG moments, the potential at each collected iterate,
    and the full-data potential at θ₀."""
    num_rows = len(x)
    batch = min(options.swa_batch_size, num_rows)
    steps_per_epoch = max(num_rows // batch, 1)
    flat = _Flat(theta0)
    averaged = AveragedModel(flat)
    optimizer = torch.optim.SGD(flat.parameters(), lr=options.burn_in_lr or 10 * swa_lr,
                                momentum=options.momentum)  # fmt: skip
    annealing = SWALR(optimizer, swa_lr=swa_lr, anneal_strategy="cos",
                      anneal_epochs=max(options.burn_in_epochs * steps_per_epoch, 1))  # fmt: skip
    rate = _learning_rates(options, swa_lr, steps_per_epoch)
    rank = getattr(options, "rank", 2)
    deviations: deque[torch.Tensor] = deque(maxlen=rank)
    second = torch.zeros_like(theta0)
    with torch.no_grad():
        start_energy = float(potential(theta0.detach(), x, y))
    potentials: list[float] = []
    batches = _minibatches(num_rows, batch)  # a fresh subset per step, as SG-MCMC's
    total = (options.burn_in_epochs + options.swa_epochs) * steps_per_epoch
    with tqdm(total=total, desc=f"{name} (SGD)", disable=not progress_bar) as bar:
        for epoch in range(options.burn_in_epochs + options.swa_epochs):
            collecting = epoch >= options.burn_in_epochs
            for step in range(steps_per_epoch):
                if collecting:
                    for group in optimizer.param_groups:
                        group["lr"] = rate(epoch, step)
                index = next(batches)
                xb, yb = (x, y) if index is None else (x[index], y[index])
                optimizer.zero_grad()
                energy = potential(flat.theta, xb, yb) / num_rows
                energy.backward()
                if not bool(torch.isfinite(flat.theta.grad).all()):
                    raise FloatingPointError(
                        f"{name}: non-finite gradient in SGD epoch {epoch}; lower swa_lr "
                        f"(now {swa_lr:g}), or check the scale of {data_scale(x, y)}"
                    )
                optimizer.step()
                if not collecting:
                    annealing.step()
                bar.update()
            if collecting:
                averaged.update_parameters(flat)
                theta = flat.theta.detach()
                n = int(averaged.n_averaged)
                second = second + (theta**2 - second) / n
                deviations.append(theta - averaged.module.theta.detach())
                with torch.no_grad():
                    potentials.append(float(potential(theta, x, y)))
    state = SWAGState(
        mean=averaged.module.theta.detach().clone(),
        second_moment=second, deviations=torch.stack(list(deviations)),
        collected=int(averaged.n_averaged),
    )  # fmt: skip
    return state, {"potential": potentials}, start_energy
