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

import numpy as np
import pyro
import torch
from pyro.infer import HMC, MCMC, NUTS
from pyro.infer.autoguide import init_to_sample
from pyro.infer.mcmc import RandomWalkKernel
from pyro.infer.mcmc.util import initialize_model

from pyro_bnn.infer.chains import Chain, sample_chains
from pyro_bnn.infer.options import Options
from pyro_bnn.posterior import Posterior
from pyro_bnn.potential import FlatLayout, flat_potential

__all__ = [
    "KERNELS",
    "GradientMCMCOptions",
    "HMCOptions",
    "MCMCOptions",
    "NUTSOptions",
    "RWMOptions",
    "flat_initial_values",
    "run_mcmc",
]


@dataclass(frozen=True, kw_only=True)
class MCMCOptions(Options):
    """``num_chains`` chains of ``warmup_steps`` adaptation then ``num_samples`` draws; the
    step size starts at ``step_size`` and adapts toward ``target_accept_prob``. Chains run
    in ``chain_processes`` spawned workers (default: one per chain up to the machine's
    cores; 1 runs them here, one after another). ``backend``: the kernel moves one flat
    site under the model's potential compiled with ``"inductor"`` (fused value and
    gradient; compiles once per process, tens of seconds) or ``"jit"``; ``"pyro"`` runs the
    kernel on the model itself, JIT-traced if ``jit_compile``."""

    num_samples: int = 500
    warmup_steps: int = 500
    num_chains: int = 1
    chain_processes: int | None = None
    target_accept_prob: float = 0.8
    step_size: float = 1.0
    jit_compile: bool = True
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
    """``adapt_mass_matrix`` during warmup, diagonal unless ``full_mass``."""

    adapt_mass_matrix: bool = True
    full_mass: bool = False


@dataclass(frozen=True, kw_only=True)
class NUTSOptions(GradientMCMCOptions):
    """``max_tree_depth``: at most 2**depth - 1 leapfrog steps per draw."""

    max_tree_depth: int = 10


@dataclass(frozen=True, kw_only=True)
class HMCOptions(GradientMCMCOptions):
    """``num_steps`` leapfrog steps per draw, or a ``trajectory_length`` (default 2π)."""

    num_steps: int | None = None
    trajectory_length: float | None = None


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
    """Pyro's HMC, counting gradients."""


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


def _nuts(o: NUTSOptions, **target) -> CountingNUTS:
    """``target``: ``model=...`` or ``potential_fn=...``."""
    return CountingNUTS(**target, **_gradient_options(o), max_tree_depth=o.max_tree_depth)


def _hmc(o: HMCOptions, **target) -> CountingHMC:
    return CountingHMC(
        **target,
        **_gradient_options(o),
        num_steps=o.num_steps,
        trajectory_length=o.trajectory_length,
    )


def _rwm(o: RWMOptions, **target) -> RandomWalk:
    return RandomWalk(
        **target,
        init_step_size=o.step_size,
        target_accept_prob=o.target_accept_prob,
        init_strategy=o.init_strategy,
    )


KERNELS: dict[str, tuple[type[MCMCOptions], Callable]] = {
    "nuts": (NUTSOptions, _nuts),
    "hmc": (HMCOptions, _hmc),
    "rwm": (RWMOptions, _rwm),
}


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


def flat_initial_values(
    model, x, y, layout: FlatLayout, *, init_strategy: Callable, num_chains: int
) -> torch.Tensor:
    """Each chain's start (from ``init_strategy``) as one flat unconstrained vector:
    (num_chains, layout.size)."""
    initial, _, transforms, _ = initialize_model(
        model, model_args=(x, y), init_strategy=init_strategy, num_chains=num_chains
    )
    chains = []
    for chain in range(num_chains):
        values = {
            name: transforms[name].inv(initial[name][chain] if num_chains > 1 else initial[name])
            for name in layout.names
        }
        chains.append(layout.flatten(values))
    return torch.stack(chains)


def _mcmc_chains(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: list[int],
    method: str,
    options: MCMCOptions,
    progress_bar: bool,
) -> list[Chain]:
    """One single-chain Pyro ``MCMC`` run per seed, in this process; the flat potential is
    compiled once and shared by the chains."""
    build_kernel = KERNELS[method][1]
    potential = None
    if options.backend != "pyro":
        potential = flat_potential(model, x, y, backend=options.backend)
    chains = []
    for seed in seeds:
        pyro.set_rng_seed(seed)
        if potential is not None:
            (theta,) = flat_initial_values(
                model, x, y, potential.layout, init_strategy=options.init_strategy, num_chains=1
            )
            potential(theta)  # compile before sampling
            kernel = build_kernel(options, potential_fn=lambda params: potential(params["theta"]))
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
        chains.append(
            Chain(
                draws={k: v.detach() for k, v in samples.items()},
                sample_stats=recorder.stats(),
                timings={"sampling_s": run_s, "gradients": kernel.num_gradients},
                runner=mcmc,
            )
        )
    return chains


def run_mcmc(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str,
    options: MCMCOptions,
    progress_bar: bool,
) -> Posterior:
    """Run ``options.num_chains`` independent chains of Pyro's kernel for ``method``.

    Unless ``backend="pyro"``, a model whose latents are all global is sampled as one flat
    site ``theta`` under its compiled potential (:mod:`pyro_bnn.potential`); otherwise the
    kernel runs on the model itself. Divergences, R-hat and ESS are checked after the run
    (:func:`~pyro_bnn.infer.chains.diagnose`).
    """
    return sample_chains(
        _mcmc_chains, model, x, y, method=method, options=options, progress_bar=progress_bar
    )
