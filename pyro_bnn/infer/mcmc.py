"""Full-batch MCMC with Pyro's kernels: ``nuts``, ``hmc`` and ``rwm`` (random-walk
Metropolis), with per-draw sampler statistics and multi-chain diagnostics.

Example:
    >>> import torch
    >>> from pyro_bnn import fit, zoo
    >>> model = zoo.build("bayesian-linear-regression", in_features=1, noise_scale=0.5)
    >>> x = torch.randn(30, 1); y = 2 * x[:, 0]
    >>> post = fit(model, x, y, method="rwm", num_samples=200, warmup_steps=200,
    ...            backend="jit", progress_bar=False, seed=0)
    >>> sorted(post.sample_stats)
    ['accepted', 'lp', 'step_size']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pyro.infer import HMC, MCMC, NUTS
from pyro.infer.autoguide import init_to_sample
from pyro.infer.mcmc import RandomWalkKernel
from pyro.infer.mcmc.util import initialize_model

from pyro_bnn.infer.chains import Chain
from pyro_bnn.infer.leapfrog import (
    FlatHMCMixin,
    FlatNUTSMixin,
    ValueAndGrad,
    flat_value_and_grad,
)
from pyro_bnn.infer.options import Options
from pyro_bnn.potential import flat_initial_values, flat_potential

__all__ = [
    "FlatHMC",
    "FlatNUTS",
    "GradientMCMCOptions",
    "HMCOptions",
    "MCMCOptions",
    "NUTSOptions",
    "RWMOptions",
    "hmc_kernel",
    "nuts_kernel",
    "run_mcmc_chain",
    "rwm_kernel",
]


@dataclass(frozen=True, kw_only=True)
class MCMCOptions(Options):
    """Each chain: ``warmup_steps`` adaptation then ``num_samples`` draws; the step size
    starts at ``step_size`` and adapts toward ``target_accept_prob``. ``backend``: the
    kernel moves one flat site under the model's potential compiled with ``"inductor"``
    (fused value and gradient; compiles once per process, tens of seconds) or ``"jit"``,
    NUTS and HMC with the lean leapfrog of :mod:`pyro_bnn.infer.leapfrog` (Pyro's draws,
    less Python per step); ``"pyro"`` runs Pyro's kernel on the model itself."""

    num_samples: int = 500
    warmup_steps: int = 500
    target_accept_prob: float = 0.8
    step_size: float = 1.0
    backend: str = "inductor"
    init_strategy: Callable = init_to_sample

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_choice("backend", ("pyro", "jit", "inductor"))
        if not 0 < self.target_accept_prob < 1:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {self.target_accept_prob}")

    @classmethod
    def allow_zero(cls) -> frozenset[str]:
        return frozenset({"warmup_steps"})


@dataclass(frozen=True, kw_only=True)
class RWMOptions(MCMCOptions):
    """Random-walk Metropolis: an isotropic Gaussian proposal in the unconstrained space,
    its scale (``step_size``) adapted during warmup toward ``target_accept_prob``, 0.234,
    the optimum for high-dimensional targets (Roberts, Gelman & Gilks 1997)."""

    target_accept_prob: float = 0.234
    step_size: float = 0.1
    num_samples: int = 5000
    warmup_steps: int = 5000


@dataclass(frozen=True, kw_only=True)
class GradientMCMCOptions(MCMCOptions):
    """``adapt_mass_matrix`` during warmup, diagonal unless ``full_mass``; with
    ``backend="pyro"``, the model is JIT-traced if ``jit_compile``."""

    adapt_mass_matrix: bool = True
    full_mass: bool = False
    jit_compile: bool = True


@dataclass(frozen=True, kw_only=True)
class NUTSOptions(GradientMCMCOptions):
    """``max_tree_depth``: at most 2**depth - 1 leapfrog steps per draw."""

    max_tree_depth: int = 10


@dataclass(frozen=True, kw_only=True)
class HMCOptions(GradientMCMCOptions):
    """``num_steps`` leapfrog steps per draw, whatever the adapted step size; or a
    ``trajectory_length`` (default 2π), which takes trajectory_length / step_size steps.
    No draw takes more than ``max_num_steps`` leapfrog steps: a larger ``num_steps`` is
    refused before sampling, and a trajectory cut at the cap is counted in the
    diagnostics (``capped_trajectories``) and warned about."""

    num_steps: int | None = None
    trajectory_length: float | None = None
    max_num_steps: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_steps is not None and self.trajectory_length is not None:
            raise ValueError("give num_steps or trajectory_length, not both")
        if self.num_steps is not None and self.num_steps > self.max_num_steps:
            raise ValueError(
                f"num_steps={self.num_steps} exceeds max_num_steps={self.max_num_steps} "
                "leapfrog steps per draw; lower num_steps or raise max_num_steps"
            )


class _CountsGradients:
    """Kernel mixin counting potential-energy gradients (leapfrog steps) per draw."""

    num_gradients = 0

    def setup(self, *args, **kwargs):
        super().setup(*args, **kwargs)
        potential_fn = self.potential_fn

        def counted(z):
            self.num_gradients += 1
            return potential_fn(z)

        self.potential_fn = counted

    def draw_stats(self) -> dict[str, float]:
        return {"lp": -float(self._potential_energy_last), "step_size": float(self.step_size)}


class CountingNUTS(_CountsGradients, NUTS):
    """Pyro's NUTS, counting gradients."""


class CountingHMC(_CountsGradients, HMC):
    """Pyro's HMC, counting gradients, with ``num_steps`` meaning leapfrog steps per draw
    (Pyro's own kernel turns it into a trajectory length, so an adapted small step size
    multiplies the steps) and every trajectory capped at ``max_num_steps``."""

    def __init__(self, *args, fixed_num_steps: int | None, max_num_steps: int, **kwargs):
        super().__init__(*args, num_steps=fixed_num_steps, **kwargs)
        self.fixed_num_steps, self.max_num_steps = fixed_num_steps, max_num_steps
        self.capped = 0
        self._jitter = 1.0

    @property
    def step_size(self) -> float:
        return self._adapter.step_size * self._jitter

    def sample(self, params):
        # After warmup each draw's step size is jittered uniformly by ±20 % (Neal 2011,
        # §5.4.2): with a fixed number of steps, a trajectory that happens to match a
        # period of the target (a Gaussian's, say) otherwise returns near its start
        # every draw, and the chain does not mix.
        after_warmup = self._t >= self._warmup_steps
        self._jitter = 1.0 + 0.4 * (float(torch.rand(())) - 0.5) if after_warmup else 1.0
        return self._transition(params)

    def _transition(self, params):
        """One draw at the step size set: Pyro's ``HMC.sample``."""
        return super().sample(params)

    @property
    def num_steps(self) -> int:
        if self.fixed_num_steps is not None:
            return self.fixed_num_steps
        steps = max(1, int(self.trajectory_length / self.step_size))
        if steps > self.max_num_steps:
            self.capped += 1
            return self.max_num_steps
        return steps


class FlatNUTS(FlatNUTSMixin, CountingNUTS):
    """:class:`CountingNUTS` with the lean leapfrog on the flat site (same draws)."""


class FlatHMC(FlatHMCMixin, CountingHMC):
    """:class:`CountingHMC` with the lean leapfrog on the flat site (same draws)."""


class RandomWalk(RandomWalkKernel):
    """Pyro's random-walk kernel, also on a ``potential_fn`` (with ``initial_params`` set by
    ``MCMC``), starting on the model from ``init_strategy`` (Pyro's own kernel always
    samples its start from the prior); records whether each proposal was taken."""

    num_gradients = 0

    def __init__(
        self,
        model=None,
        *,
        potential_fn=None,
        init_step_size,
        target_accept_prob,
        init_strategy=init_to_sample,
    ):
        super().__init__(
            model, init_step_size=float(init_step_size), target_accept_prob=target_accept_prob
        )
        self._given_potential = potential_fn
        self._init_strategy = init_strategy
        self._initial_params = None
        self.accepted = False

    def setup(self, warmup_steps, *args, **kwargs):
        self._warmup_steps = warmup_steps
        if self._given_potential is None:
            self._initial_params, self.potential_fn, self.transforms, _ = initialize_model(
                self.model, model_args=args, model_kwargs=kwargs, init_strategy=self._init_strategy
            )
        else:
            self.potential_fn, self.transforms = self._given_potential, {}
        self._energy_last = self.potential_fn(self._initial_params)

    def sample(self, params):
        before = self._energy_last
        params = super().sample(params)
        self.accepted = self._energy_last is not before
        return params

    def draw_stats(self) -> dict[str, float]:
        return {
            "lp": -float(self._energy_last),
            "step_size": math.exp(self._log_step_size),
            "accepted": float(self.accepted),
        }


def _gradient_options(o: GradientMCMCOptions) -> dict:
    return dict(
        step_size=o.step_size,
        adapt_mass_matrix=o.adapt_mass_matrix,
        full_mass=o.full_mass,
        target_accept_prob=o.target_accept_prob,
        jit_compile=o.jit_compile,
        ignore_jit_warnings=True,
        init_strategy=o.init_strategy,
    )


def _lean(value_and_grad: ValueAndGrad | None) -> dict:
    """The lean leapfrog's argument, where there is a flat potential to give it."""
    return {} if value_and_grad is None else {"value_and_grad": value_and_grad}


def nuts_kernel(
    o: NUTSOptions,
    *,
    model: Callable | None = None,
    potential_fn: Callable | None = None,
    value_and_grad: ValueAndGrad | None = None,
) -> CountingNUTS:
    """NUTS on ``model`` or ``potential_fn``; given ``value_and_grad`` (the flat site's U
    and ∇U), with the lean leapfrog (:class:`FlatNUTS`), else Pyro's (:class:`CountingNUTS`)."""
    lean = _lean(value_and_grad)
    kind = FlatNUTS if lean else CountingNUTS
    return kind(
        model, potential_fn, **lean, **_gradient_options(o), max_tree_depth=o.max_tree_depth
    )


def hmc_kernel(
    o: HMCOptions,
    *,
    model: Callable | None = None,
    potential_fn: Callable | None = None,
    value_and_grad: ValueAndGrad | None = None,
) -> CountingHMC:
    """HMC as :func:`nuts_kernel` builds NUTS (:class:`FlatHMC` or :class:`CountingHMC`)."""
    lean = _lean(value_and_grad)
    kind = FlatHMC if lean else CountingHMC
    return kind(
        model,
        potential_fn,
        **lean,
        **_gradient_options(o),
        fixed_num_steps=o.num_steps,
        max_num_steps=o.max_num_steps,
        trajectory_length=o.trajectory_length,
    )


def rwm_kernel(
    o: RWMOptions,
    *,
    model: Callable | None = None,
    potential_fn: Callable | None = None,
    value_and_grad: ValueAndGrad | None = None,
) -> RandomWalk:
    """Random-walk Metropolis (``value_and_grad`` unused: it takes no gradient)."""
    return RandomWalk(
        model,
        potential_fn=potential_fn,
        init_step_size=o.step_size,
        target_accept_prob=o.target_accept_prob,
        init_strategy=o.init_strategy,
    )


class _DrawRecorder:
    """``hook_fn`` for ``MCMC``: the kernel's statistics of each kept draw, with its
    gradient count (``n_steps``) and whether it diverged."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._gradients = 0
        self._divergences = 0

    def __call__(self, kernel, params, stage: str, i: int) -> None:
        steps = kernel.num_gradients - self._gradients
        self._gradients = kernel.num_gradients
        divergences = len(getattr(kernel, "_divergences", ()))
        diverged = divergences > self._divergences
        self._divergences = divergences
        if stage.startswith("Sample"):
            row = kernel.draw_stats()
            if hasattr(kernel, "_divergences"):
                row |= {"n_steps": steps, "diverging": diverged}
            self.rows.append(row)

    def stats(self) -> dict[str, np.ndarray]:
        """(1, draw) arrays; ``n_steps`` as integers and ``diverging`` as booleans."""
        types = {"n_steps": np.int64, "diverging": bool}
        return {
            name: np.asarray([row[name] for row in self.rows], dtype=types.get(name))[None]
            for name in (self.rows[0] if self.rows else {})
        }


def run_mcmc_chain(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    name: str,
    seed: int,
    options: MCMCOptions,
    shared: dict[str, Any],
    progress_bar: bool,
    build_kernel: Callable,
) -> Chain:
    """One single-chain Pyro ``MCMC`` run of ``build_kernel(options, ...)``.

    Unless ``backend="pyro"``, a model whose latents are all global is sampled as one flat
    site ``theta`` under its compiled potential (:mod:`pyro_bnn.potential`), compiled once
    per process and shared by its chains, and ``build_kernel`` is also given its
    ``value_and_grad``; otherwise the kernel runs on the model itself.
    """
    if options.backend != "pyro" and "potential" not in shared:
        shared["potential"] = flat_potential(model, x, y, backend=options.backend)
    potential = shared.get("potential")
    if potential is not None:
        (theta,) = flat_initial_values(
            model, x, y, potential.layout, init_strategy=options.init_strategy, num_chains=1
        )
        potential(theta)  # compile before sampling
        kernel = build_kernel(
            options,
            potential_fn=lambda params: potential(params["theta"]),
            value_and_grad=flat_value_and_grad(potential),
        )
        args, mcmc_kwargs = (), {"initial_params": {"theta": theta}}
    else:
        kernel = build_kernel(options, model=model)
        args, mcmc_kwargs = (x, y), {}
    recorder = _DrawRecorder()
    mcmc = MCMC(
        kernel,
        num_samples=options.num_samples,
        warmup_steps=options.warmup_steps,
        disable_progbar=not progress_bar,
        hook_fn=recorder,
        **mcmc_kwargs,
    )
    start = time.perf_counter()
    mcmc.run(*args)
    run_s = time.perf_counter() - start
    samples = mcmc.get_samples(group_by_chain=True)
    if potential is not None:
        samples = potential.layout.constrain(samples["theta"])
    diagnostics, found = {}, []
    if getattr(kernel, "capped", 0):
        diagnostics["capped_trajectories"] = kernel.capped
        found.append(
            f"{name}: {kernel.capped} trajectories hit max_num_steps={options.max_num_steps} "
            "leapfrog steps (the adapted step size is small for trajectory_length); give "
            "num_steps, or a shorter trajectory_length"
        )
    return Chain(
        draws={k: v.detach() for k, v in samples.items()},
        sample_stats=recorder.stats(),
        diagnostics=diagnostics,
        warnings=found,
        timings={"sampling_s": run_s, "gradients": kernel.num_gradients},
        runner=mcmc,
    )
