"""Stochastic-gradient MCMC on the model's flat potential: ``sgld``, ``sghmc``, ``sgnht``,
``csgld`` and ``csghmc``.

Every sampler moves the flat unconstrained vector θ of :mod:`pyro_bnn.potential` under the
gradient of U_B(θ), the potential of a minibatch B with its log-likelihood scaled to the
whole dataset (:class:`~pyro_bnn.likelihoods.ScaleDataPlate`), so Pyro's model is the only
definition of the target. ``temperature`` T samples p(θ | D)^(1/T) (T < 1: a cold
posterior) by scaling the injected noise by √T.

- ``sgld`` (Welling & Teh 2011): θ ← θ − ε_t/2 ∇U_B(θ) + N(0, ε_t T), with ε_t = a(b + t)^(−γ)
  (``step_size`` a, ``decay_offset`` b, ``decay_power`` γ; γ = 0 keeps it constant).
- ``sghmc`` (Chen et al. 2014): v ← (1 − α) v − η ∇U_B(θ) + N(0, 2(α − β̂) η T), θ ← θ + v,
  with friction α and β̂ = η V̂ / 2 from a running estimate V̂ of the minibatch gradient's
  noise variance (``noise_estimate``; half the squared difference of consecutive minibatch
  gradients), capped so the injected noise stays non-negative.
- ``sgnht`` (Ding et al. 2014): p ← p − ξ p h − ∇U_B(θ) h + N(0, 2 A h T), θ ← θ + p h,
  ξ ← ξ + (pᵀp/d − T) h: the thermostat ξ absorbs the unknown gradient noise by keeping
  the kinetic temperature pᵀp/d at T. ξ is one scalar, so it holds the *average*
  temperature: gradient noise much larger in some coordinates than in others leaves those
  hot and the rest cold (tutorial 4 shows it).
- ``csgld``, ``csghmc`` (Zhang et al. 2020): the step size follows cosine cycles,
  ε_k = ε_0/2 (cos(π r_k) + 1) with r_k the position in the current cycle; while
  r_k < ``exploration`` no noise is injected (an optimisation phase), after it the sampler
  runs as sgld / sghmc and its draws are kept.

A chain is one independent run from its own start; draws are kept every ``thin`` steps
after ``burn_in`` (or in each cycle's sampling phase). Everything returns the usual
:class:`~pyro_bnn.posterior.Posterior` (chain, draw), with per-draw ``sample_stats``.

Example:
    >>> import torch
    >>> from pyro_bnn import fit, zoo
    >>> model = zoo.build("bayesian-linear-regression", in_features=1, noise_scale=0.5)
    >>> x = torch.randn(50, 1); y = 2 * x[:, 0]
    >>> post = fit(model, x, y, method="sgld", step_size=1e-3, num_samples=20, burn_in=50,
    ...            batch_size=10, progress_bar=False, seed=0)
    >>> post.draws["linear.weight"].shape
    torch.Size([1, 20, 1, 1])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pyro.infer.autoguide import init_to_sample
from tqdm import tqdm

from pyro_bnn import distributed
from pyro_bnn.diagnostics import data_scale, not_finite_at_start, potential_diagnostics
from pyro_bnn.distributed import shard_rows_index
from pyro_bnn.infer.chains import Chain
from pyro_bnn.infer.options import Options
from pyro_bnn.likelihoods import ScaleDataPlate
from pyro_bnn.potential import Potential, flat_initial_values, flat_layout

__all__ = [
    "CyclicalSGHMCOptions",
    "CyclicalSGLDOptions",
    "Hamiltonian",
    "Langevin",
    "NoseHoover",
    "SGHMCOptions",
    "SGLDOptions",
    "SGMCMCOptions",
    "SGNHTOptions",
    "run_sgmcmc_chain",
]


@dataclass(frozen=True, kw_only=True)
class SGMCMCOptions(Options):
    """What every SG-MCMC chain shares: minibatches of ``batch_size`` rows (None: full
    batch); ``step_size`` on the full-data potential; draws kept every ``thin`` steps;
    ``temperature`` T of p(θ | D)^(1/T); ``backend`` of the potential (``"jit"``,
    ``"inductor"`` or ``"eager"``); each chain starts from ``init_strategy``."""

    thin: int = 1
    batch_size: int | None = None
    step_size: float = 1e-4
    temperature: float = 1.0
    backend: str = "jit"
    init_strategy: Callable = init_to_sample

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_choice("backend", ("jit", "inductor", "eager"))

    @classmethod
    def allow_zero(cls) -> frozenset[str]:
        return frozenset({"temperature"})

    @property
    def num_steps(self) -> int:
        raise NotImplementedError

    @property
    def num_draws(self) -> int:
        raise NotImplementedError

    def schedule(self) -> Iterator[tuple[float, bool, bool]]:
        """(step size, inject noise?, keep this draw?) for each step."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class BurnInOptions(SGMCMCOptions):
    """``burn_in`` steps, then ``num_samples`` draws kept every ``thin`` steps."""

    num_samples: int = 500
    burn_in: int = 1000

    @classmethod
    def allow_zero(cls) -> frozenset[str]:
        return super().allow_zero() | {"burn_in"}

    def step_size_at(self, t: int) -> float:
        return self.step_size

    @property
    def num_steps(self) -> int:
        return self.burn_in + self.num_samples * self.thin

    @property
    def num_draws(self) -> int:
        return self.num_samples

    def schedule(self) -> Iterator[tuple[float, bool, bool]]:
        for t in range(self.num_steps):
            kept = t >= self.burn_in and (t - self.burn_in) % self.thin == self.thin - 1
            yield self.step_size_at(t), True, kept


@dataclass(frozen=True, kw_only=True)
class SGLDOptions(BurnInOptions):
    """ε_t = ``step_size`` · (``decay_offset`` + t)^(−``decay_power``)."""

    decay_offset: float = 1.0
    decay_power: float = 0.0

    @classmethod
    def allow_zero(cls) -> frozenset[str]:
        return super().allow_zero() | {"decay_power"}

    def step_size_at(self, t: int) -> float:
        return self.step_size * (self.decay_offset + t) ** (-self.decay_power)


@dataclass(frozen=True, kw_only=True)
class FrictionOptions(SGMCMCOptions):
    """``friction`` α (1 − momentum); ``noise_estimate``: subtract the estimated minibatch
    gradient noise β̂ from the injected noise; ``noise_decay``: the running estimate's
    exponential-average weight of the past."""

    friction: float = 0.01
    noise_estimate: bool = True
    noise_decay: float = 0.99


@dataclass(frozen=True, kw_only=True)
class SGHMCOptions(FrictionOptions, BurnInOptions):
    """Options of ``sghmc``."""


@dataclass(frozen=True, kw_only=True)
class SGNHTOptions(BurnInOptions):
    """``diffusion`` A, the injected noise, which also starts the thermostat ξ."""

    diffusion: float = 0.01


@dataclass(frozen=True, kw_only=True)
class CyclicalSGLDOptions(SGMCMCOptions):
    """Options of ``csgld``: ``num_cycles`` cosine cycles of ``cycle_length`` steps from
    ``step_size``; the first ``exploration`` fraction of each cycle injects no noise; draws
    are kept every ``thin`` steps after it."""

    num_cycles: int = 4
    cycle_length: int = 1000
    exploration: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.exploration < 1:
            raise ValueError(f"exploration must be in [0, 1), got {self.exploration}")
        if self.draws_per_cycle < 1:
            raise ValueError("no draw is kept: lower exploration or thin, or lengthen the cycle")

    @classmethod
    def allow_zero(cls) -> frozenset[str]:
        return super().allow_zero() | {"exploration"}

    @property
    def first_sampling_step(self) -> int:
        return math.ceil(self.exploration * self.cycle_length)

    @property
    def draws_per_cycle(self) -> int:
        return len(range(self.first_sampling_step, self.cycle_length, self.thin))

    @property
    def num_steps(self) -> int:
        return self.num_cycles * self.cycle_length

    @property
    def num_draws(self) -> int:
        return self.num_cycles * self.draws_per_cycle

    def schedule(self) -> Iterator[tuple[float, bool, bool]]:
        """Cosine cycles; noise and kept draws only after each cycle's exploration."""
        for _ in range(self.num_cycles):
            for k in range(self.cycle_length):
                eps = 0.5 * self.step_size * (math.cos(math.pi * k / self.cycle_length) + 1)
                sampling = k >= self.first_sampling_step
                yield eps, sampling, sampling and (k - self.first_sampling_step) % self.thin == 0


@dataclass(frozen=True, kw_only=True)
class CyclicalSGHMCOptions(FrictionOptions, CyclicalSGLDOptions):
    """Options of ``csghmc``: ``csgld``'s cycles with SGHMC's dynamics; Zhang et al. use
    friction 1 − momentum = 0.1."""

    friction: float = 0.1


# -- dynamics: one step each, on flat tensors -----------------------------------------------


def _noise(like: torch.Tensor, variance: float | torch.Tensor) -> torch.Tensor:
    return torch.randn_like(like) * torch.as_tensor(variance).clamp_min(0).sqrt()


class Langevin:
    """SGLD. Each dynamics has ``step`` and ``stats`` (statistics of the current state,
    asked for only when a draw is kept)."""

    def __init__(self, theta: torch.Tensor, options: SGMCMCOptions) -> None:
        self.theta, self.temperature = theta, options.temperature

    def step(self, grad: torch.Tensor, eps: float, noisy: bool) -> None:
        self.theta = self.theta - 0.5 * eps * grad
        if noisy:
            self.theta = self.theta + _noise(self.theta, eps * self.temperature)

    def stats(self) -> dict[str, float]:
        return {}


class Hamiltonian:
    """SGHMC with v = η p (Chen et al.'s reparameterisation)."""

    def __init__(self, theta: torch.Tensor, options: FrictionOptions) -> None:
        self.theta, self.options = theta, options
        self.v = torch.zeros_like(theta)
        self.eta = options.step_size  # the last step's η, for the kinetic temperature
        self.grad_var = torch.zeros_like(theta)
        self.previous: torch.Tensor | None = None
        self.seen = 0

    def _beta_hat(self, grad: torch.Tensor, eta: float) -> torch.Tensor | float:
        """β̂ = η V̂ / 2, V̂ the minibatch-gradient noise variance per coordinate.

        Two consecutive minibatches are independent draws at almost the same θ (a step
        moves θ by |v|, far below the gradient's length scale), so half the squared
        difference of their gradients estimates V without the drift of the true gradient
        that a plain running variance would count as noise."""
        o = self.options
        if not o.noise_estimate or o.batch_size is None:
            return 0.0
        if self.previous is not None:
            w = o.noise_decay
            self.seen += 1
            self.grad_var = w * self.grad_var + (1 - w) * 0.5 * (grad - self.previous) ** 2
        self.previous = grad
        if self.seen == 0:
            return 0.0
        corrected = self.grad_var / (1 - o.noise_decay**self.seen)  # the average starts at 0
        return (0.5 * eta * corrected).clamp(max=o.friction)

    def step(self, grad: torch.Tensor, eta: float, noisy: bool) -> None:
        alpha = self.options.friction
        beta = self._beta_hat(grad, eta)
        self.v = (1 - alpha) * self.v - eta * grad
        if noisy:
            variance = 2 * (alpha - beta) * eta * self.options.temperature
            self.v = self.v + _noise(self.v, variance)
        self.theta = self.theta + self.v
        self.eta = eta

    def stats(self) -> dict[str, float]:
        return {"kinetic_temperature": float(self.v.pow(2).mean() / self.eta)}


class NoseHoover:
    """SGNHT."""

    def __init__(self, theta: torch.Tensor, options: SGNHTOptions) -> None:
        self.theta, self.options = theta, options
        self.p = torch.randn_like(theta) * math.sqrt(options.temperature)
        self.xi = options.diffusion

    def step(self, grad: torch.Tensor, h: float, noisy: bool) -> None:
        o = self.options
        self.p = self.p - self.xi * self.p * h - grad * h
        if noisy:
            self.p = self.p + _noise(self.p, 2 * o.diffusion * h * o.temperature)
        self.theta = self.theta + self.p * h
        self.kinetic = float(self.p.pow(2).mean())  # the thermostat needs it every step
        self.xi += (self.kinetic - o.temperature) * h

    def stats(self) -> dict[str, float]:
        return {"kinetic_temperature": self.kinetic, "thermostat": self.xi}


def _minibatches(
    num_rows: int, batch_size: int | None, *, shards: int = 1, shard: int | None = None
) -> Iterator[torch.Tensor | None]:
    """Row indices of each step's minibatch, or None for the full batch. Each minibatch is
    a fresh uniform subset, independent of the last (as the samplers' theory assumes: the
    disjoint batches of an epoch would give anti-correlated gradient noise). With
    ``shards`` equal shards of ``num_rows`` rows (data-parallel), ``batch_size / shards``
    rows of each, at the same positions (:func:`~pyro_bnn.distributed.shard_rows_index`)."""
    local = None if batch_size is None else batch_size // shards
    while True:
        if local is None or local >= num_rows:
            yield None
        else:
            rows = torch.randperm(num_rows)[:local]
            yield shard_rows_index(rows, shard_rows=num_rows, shards=shards, shard=shard)


def run_sgmcmc_chain(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    name: str,
    seed: int,
    options: SGMCMCOptions,
    shared: dict[str, Any],
    progress_bar: bool,
    dynamics: type,
) -> Chain:
    """One chain of ``dynamics`` (:class:`Langevin`, :class:`Hamiltonian` or
    :class:`NoseHoover`) on the minibatch potential, compiled once per process."""
    plan = distributed.active()
    if "potential" not in shared:
        scaled = ScaleDataPlate(distributed.global_rows(len(x)))(model)
        layout = flat_layout(scaled, x, y)
        if layout is None:
            raise ValueError(f"{name} needs a model whose latent sites all sit outside plates")
        shared["potential"] = Potential(scaled, x, y, backend=options.backend, layout=layout)
    potential = shared["potential"]
    layout = potential.layout
    (start,) = flat_initial_values(
        model, x, y, layout, init_strategy=options.init_strategy, num_chains=1
    )
    began = time.perf_counter()
    state = dynamics(start, options)
    batches = distributed.minibatches(_minibatches, len(x), options.batch_size)
    kept: list[torch.Tensor] = []
    stats: dict[str, list[float]] = {}
    first: list[float] = []  # the potential over the first hundredth of the steps
    with tqdm(total=options.num_steps, desc=name, disable=not progress_bar) as bar:
        for step, (eps, noisy, keep) in enumerate(options.schedule()):
            index = next(batches)
            theta = state.theta.detach().requires_grad_(True)
            xb, yb = (x, y) if index is None else (x[index], y[index])
            try:
                energy = potential(theta, xb, yb)
                (grad,) = torch.autograd.grad(energy, theta)
            except Exception:
                if plan is not None:  # the other ranks wait in the all-reduce: send NaN
                    nan = torch.full_like(theta, math.nan)
                    plan.average_flat(nan, nan[0])
                raise
            if plan is not None:  # the global minibatch's gradient and potential
                grad, value = plan.average_flat(grad, energy)
                energy = energy.new_tensor(value)
            if not torch.isfinite(grad).all():
                if step == 0:
                    raise ValueError(not_finite_at_start(name, "gradient", x, y))
                raise FloatingPointError(
                    f"{name}: non-finite gradient at step {step} of the chain with "
                    f"seed {seed}; try a smaller step_size (now {options.step_size:g}), or "
                    f"check the scale of {data_scale(x, y)}"
                )
            if step < max(1, options.num_steps // 100):
                first.append(energy.item())
            state.step(grad, eps, noisy)
            if keep:
                kept.append(state.theta.detach().clone())
                for key, value in {"step_size": eps, "potential": energy.item(),
                                   **state.stats()}.items():  # fmt: skip
                    stats.setdefault(key, []).append(value)
            bar.update()
    theta = torch.stack(kept)[None]
    diagnostics, found = potential_diagnostics(
        float(np.mean(first)),
        np.asarray(stats["potential"]),
        groups=getattr(options, "num_cycles", 1),
        dim=layout.size,
        method=name,
        remedy=f"the step size is too large for this model: lower step_size "
        f"(now {options.step_size:g})",
    )
    return Chain(
        draws={k: v.detach() for k, v in layout.constrain(theta).items()},
        sample_stats={k: np.asarray(v)[None] for k, v in stats.items()},
        diagnostics=diagnostics,
        warnings=found,
        timings={"sampling_s": time.perf_counter() - began, "gradients": options.num_steps},
    )
