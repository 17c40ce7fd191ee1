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
from pyro_bnn.infer.compiled_step import compile_graph, graph_key
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
    ``temperature`` T of p(θ | D)^(1/T); ``backend`` of the step: ``"jit"`` traces the
    gradient and the update into one graph, ``"inductor"`` compiles that graph with
    ``torch.compile``, ``"eager"`` runs them step by step; each chain starts from
    ``init_strategy``."""

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
#
# Each dynamics holds its state as a list of tensors (θ first) and updates it in place with
# ``update_(tensors, grad, eps, noise)``: a fixed formula of tensors, which
# :class:`SGMCMCStep` runs as it is (``backend="eager"``, or data-parallel) or traced
# into one graph with the gradient. ``eps`` is the step size (a 0-dim float64 CPU tensor)
# and ``noise`` standard normals shaped like θ (zeros where no noise is injected).


def _wide(theta: torch.Tensor) -> torch.dtype:
    """float64 for the samplers' scalar state (counts, the thermostat), as Python floats
    were, where the device has it (MPS has not)."""
    return theta.dtype if theta.device.type == "mps" else torch.float64


def _scaled(noise: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """``noise`` times √variance (a negative variance, from rounding, injects none)."""
    return noise * variance.clamp_min(0).sqrt().to(noise.dtype)


class Langevin:
    """SGLD. Each dynamics has ``tensors``, ``update_`` and ``stats`` (statistics of the
    current state, asked for only when a draw is kept)."""

    def __init__(self, theta: torch.Tensor, options: SGMCMCOptions) -> None:
        self.options = options
        self.tensors = [theta.detach().clone()]

    @property
    def theta(self) -> torch.Tensor:
        return self.tensors[0]

    def update_(self, tensors, grad, eps, noise) -> None:
        (theta,) = tensors
        theta.sub_(0.5 * eps.to(theta.dtype) * grad)
        theta.add_(_scaled(noise, eps * self.options.temperature))

    def stats(self, eps: float) -> dict[str, float]:
        return {}


class Hamiltonian(Langevin):
    """SGHMC with v = η p (Chen et al.'s reparameterisation). State: θ, v, the running
    estimate V̂ of the minibatch-gradient noise variance, the last minibatch gradient, and
    (gradients seen, estimates made)."""

    def __init__(self, theta: torch.Tensor, options: FrictionOptions) -> None:
        super().__init__(theta, options)
        zeros = torch.zeros_like(theta)
        counts = torch.zeros(2, dtype=_wide(theta), device=theta.device)
        self.tensors += [zeros, zeros.clone(), zeros.clone(), counts]

    def _beta_hat(self, tensors, grad, eta) -> torch.Tensor:
        """β̂ = η V̂ / 2, V̂ the minibatch-gradient noise variance per coordinate.

        Two consecutive minibatches are independent draws at almost the same θ (a step
        moves θ by |v|, far below the gradient's length scale), so half the squared
        difference of their gradients estimates V without the drift of the true gradient
        that a plain running variance would count as noise."""
        o = self.options
        if not o.noise_estimate or o.batch_size is None:
            return torch.zeros((), dtype=torch.float64)
        _, _, grad_var, previous, counts = tensors
        w = o.noise_decay
        after_first = counts[0] > 0  # a previous minibatch gradient exists
        estimate = w * grad_var + (1 - w) * 0.5 * (grad - previous) ** 2
        grad_var.copy_(torch.where(after_first, estimate, grad_var))
        counts.add_(torch.stack([torch.ones_like(counts[0]), after_first.to(counts.dtype)]))
        previous.copy_(grad)
        seen = counts[1]
        corrected = grad_var / (1 - w ** seen.clamp_min(1)).to(grad.dtype)  # starts at 0
        beta = (0.5 * eta.to(grad.dtype) * corrected).clamp(max=o.friction)
        return torch.where(seen > 0, beta, torch.zeros_like(beta))

    def update_(self, tensors, grad, eta, noise) -> None:
        theta, v = tensors[:2]
        alpha = self.options.friction
        beta = self._beta_hat(tensors, grad, eta)
        v.mul_(1 - alpha).sub_(eta.to(v.dtype) * grad)
        v.add_(_scaled(noise, 2 * (alpha - beta) * eta * self.options.temperature))
        theta.add_(v)

    def stats(self, eps: float) -> dict[str, float]:
        return {"kinetic_temperature": float(self.tensors[1].pow(2).mean() / eps)}


class NoseHoover(Langevin):
    """SGNHT. State: θ, the momentum p, the thermostat ξ and the kinetic temperature."""

    def __init__(self, theta: torch.Tensor, options: SGNHTOptions) -> None:
        super().__init__(theta, options)
        p = torch.randn_like(theta) * math.sqrt(options.temperature)
        xi = torch.full((), options.diffusion, dtype=_wide(theta), device=theta.device)
        self.tensors += [p, xi, torch.zeros_like(xi)]

    def update_(self, tensors, grad, h, noise) -> None:
        theta, p, xi, kinetic = tensors
        o = self.options
        step = h.to(p.dtype)
        p.copy_(p - xi.to(p.dtype) * p * step - grad * step)
        p.add_(_scaled(noise, 2 * o.diffusion * h * o.temperature))
        theta.add_(p * step)
        kinetic.copy_(p.pow(2).mean())  # the thermostat needs it every step
        xi.add_((kinetic - o.temperature) * h.to(xi.dtype))

    def stats(self, eps: float) -> dict[str, float]:
        return {"kinetic_temperature": float(self.tensors[3]), "thermostat": float(self.tensors[2])}


class SGMCMCStep:
    """``step(x, y, eps, noise) -> (energy, finite)``: the minibatch potential's gradient
    at θ and ``dynamics``' update of its state in place, as one graph per batch shape
    (``backend`` ``"jit"`` or ``"inductor"``, :func:`~pyro_bnn.infer.compiled_step.
    compile_graph`; kept in ``cache``, shared by the chains of a fit) or run as it is
    (``"eager"``; a model the step cannot trace; data-parallel ranks, whose gradients are
    averaged between the two halves)."""

    def __init__(self, potential: Potential, dynamics, *, backend: str, cache: dict) -> None:
        self.potential, self.dynamics = potential, dynamics
        self.backend, self.cache = backend, cache
        theta = dynamics.theta
        # what the traced graph bakes in besides the batch's shape: the options' constants
        self._graph_key = (type(dynamics), dynamics.options, backend, id(potential),
                           tuple(theta.shape), theta.dtype)  # fmt: skip

    def _step(self, *tensors):
        state, (eps, noise, x, y) = list(tensors[:-4]), tensors[-4:]
        grad, energy = torch.func.grad_and_value(self.potential._energy)(state[0], x, y)
        finite = torch.isfinite(grad).all()
        self.dynamics.update_(state, grad, eps, noise)
        # the state comes back too: torch.compile (torch 2.13) drops an in-place write to a
        # 0-dim input that nothing returned reads (SGNHT's thermostat stood still)
        return energy, finite, *state

    def _compiled(self, inputs: tuple[torch.Tensor, ...]) -> Callable | None:
        key = graph_key(self._graph_key, inputs)
        if key not in self.cache:
            try:
                self.cache[key] = compile_graph(
                    self._step, inputs, unvalidated=self.potential.unvalidated, backend=self.backend
                )
            except Exception:  # an op it cannot trace: the same formulas, step by step
                self.cache[key] = None
        return self.cache[key]

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Build (and compile) the step for batches shaped like ``(x, y)`` before the
        chain's steps; the state does not move (the graph is traced on copies)."""
        if self.backend != "eager":
            theta = self.dynamics.theta
            eps = torch.zeros((), dtype=torch.float64)
            self._compiled((*self.dynamics.tensors, eps, torch.zeros_like(theta), x, y))

    def __call__(self, x, y, eps: float, noise: torch.Tensor, *, plan=None):
        eps_t = torch.tensor(eps, dtype=torch.float64)
        tensors = self.dynamics.tensors
        if plan is None and self.backend != "eager":
            inputs = (*tensors, eps_t, noise, x, y)
            compiled = self._compiled(inputs)
            if compiled is not None:
                energy, finite = compiled(*inputs)[:2]
                return energy, bool(finite)
        theta = tensors[0].detach().requires_grad_(True)
        try:
            energy = self.potential(theta, x, y)
            (grad,) = torch.autograd.grad(energy, theta)
        except Exception:
            if plan is not None:  # the other ranks wait in the all-reduce: send NaN
                nan = torch.full_like(theta, math.nan)
                plan.average_flat(nan, nan[0])
            raise
        if plan is not None:  # the global minibatch's gradient and potential
            grad, value = plan.average_flat(grad, energy)
            energy = energy.new_tensor(value)
        finite = bool(torch.isfinite(grad).all())
        if finite:
            with torch.no_grad():
                self.dynamics.update_(tensors, grad, eps_t, noise)
        return energy.detach(), finite


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
    step_fn = SGMCMCStep(potential, state, backend=options.backend,
                         cache=shared.setdefault("sgmcmc_steps", {}))  # fmt: skip
    if plan is None:
        rows = min(options.batch_size or len(x), len(x))
        step_fn.prepare(x[:rows], y[:rows])
    setup_s, began = time.perf_counter() - began, time.perf_counter()
    batches = distributed.minibatches(_minibatches, len(x), options.batch_size)
    kept: list[torch.Tensor] = []
    stats: dict[str, list[float]] = {}
    first: list[float] = []  # the potential over the first hundredth of the steps
    with tqdm(total=options.num_steps, desc=name, disable=not progress_bar) as bar:
        for step, (eps, noisy, keep) in enumerate(options.schedule()):
            index = next(batches)
            xb, yb = (x, y) if index is None else (x[index], y[index])
            theta = state.theta
            noise = torch.randn_like(theta) if noisy else torch.zeros_like(theta)
            energy, finite = step_fn(xb, yb, eps, noise, plan=plan)
            if not finite:
                if step == 0:
                    raise ValueError(not_finite_at_start(name, "gradient", x, y))
                raise FloatingPointError(
                    f"{name}: non-finite gradient at step {step} of the chain with "
                    f"seed {seed}; try a smaller step_size (now {options.step_size:g}), or "
                    f"check the scale of {data_scale(x, y)}"
                )
            if step < max(1, options.num_steps // 100):
                first.append(energy.item())
            if keep:
                kept.append(state.theta.clone())
                for key, value in {"step_size": eps, "potential": energy.item(),
                                   **state.stats(eps)}.items():  # fmt: skip
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
        timings={
            "setup_s": setup_s,
            "sampling_s": time.perf_counter() - began,
            "gradients": options.num_steps,
        },
    )
