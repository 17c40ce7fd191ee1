"""Pyro's NUTS and HMC kernels, with per-draw sampler statistics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pyro.infer import HMC, MCMC, NUTS
from pyro.infer.autoguide import init_to_sample
from pyro.infer.mcmc.util import initialize_model

from pyro_bnn.infer.options import Options
from pyro_bnn.posterior import Posterior
from pyro_bnn.potential import FlatLayout, flat_potential

__all__ = [
    "KERNELS",
    "HMCOptions",
    "MCMCOptions",
    "NUTSOptions",
    "flat_initial_values",
    "run_mcmc",
]


@dataclass(frozen=True, kw_only=True)
class MCMCOptions(Options):
    """``num_chains`` chains of ``warmup_steps`` adaptation then ``num_samples`` draws;
    ``target_accept_prob`` for step-size adaptation. ``backend``: the kernel moves one flat
    site under the model's potential compiled with ``"inductor"`` (fused value and
    gradient; compiles once, tens of seconds) or ``"jit"``; ``"pyro"`` runs the kernel on
    the model itself, JIT-traced if ``jit_compile``."""

    num_samples: int = 500
    warmup_steps: int = 500
    num_chains: int = 1
    target_accept_prob: float = 0.8
    step_size: float = 1.0
    adapt_mass_matrix: bool = True
    full_mass: bool = False
    jit_compile: bool = True
    backend: str = "inductor"
    init_strategy: Callable = init_to_sample

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_choice("backend", ("pyro", "jit", "inductor"))

    @classmethod
    def allow_zero(cls) -> frozenset[str]:
        return frozenset({"warmup_steps"})


@dataclass(frozen=True, kw_only=True)
class NUTSOptions(MCMCOptions):
    """``max_tree_depth``: at most 2**depth - 1 leapfrog steps per draw."""

    max_tree_depth: int = 10


@dataclass(frozen=True, kw_only=True)
class HMCOptions(MCMCOptions):
    """``num_steps`` leapfrog steps per draw, or a ``trajectory_length`` (default 2π)."""

    num_steps: int | None = None
    trajectory_length: float | None = None


class _CountsGradients:
    """Kernel mixin counting potential-energy gradients (leapfrog steps) per draw."""

    num_gradients = 0

    def setup(self, *args, **kwargs):
        super().setup(*args, **kwargs)
        potential_fn = self.potential_fn
        if getattr(potential_fn, "counted", False):  # a later chain reusing this kernel
            return

        def counted(z):
            self.num_gradients += 1
            return potential_fn(z)

        counted.counted = True
        self.potential_fn = counted


class CountingNUTS(_CountsGradients, NUTS):
    """Pyro's NUTS, counting gradients."""


class CountingHMC(_CountsGradients, HMC):
    """Pyro's HMC, counting gradients."""


def _common(o: MCMCOptions) -> dict:
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
    return CountingNUTS(**target, **_common(o), max_tree_depth=o.max_tree_depth)


def _hmc(o: HMCOptions, **target) -> CountingHMC:
    return CountingHMC(
        **target, **_common(o), num_steps=o.num_steps, trajectory_length=o.trajectory_length
    )


KERNELS: dict[str, tuple[type[MCMCOptions], Callable]] = {
    "nuts": (NUTSOptions, _nuts),
    "hmc": (HMCOptions, _hmc),
}


class _DrawRecorder:
    """``hook_fn`` for ``MCMC``: step size, leapfrog steps and log density of each draw."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, int, float]] = []
        self._last = 0

    def __call__(self, kernel, params, stage: str, i: int) -> None:
        steps = kernel.num_gradients - self._last
        self._last = kernel.num_gradients
        if stage.startswith("Sample"):
            lp = -float(kernel._potential_energy_last)
            self.rows.append((float(kernel.step_size), steps, lp))

    def stats(self, num_chains: int, num_samples: int) -> dict[str, np.ndarray]:
        if len(self.rows) != num_chains * num_samples:  # chains ran in other processes
            return {}
        table = np.asarray(self.rows, dtype=np.float64).reshape(num_chains, num_samples, 3)
        return {
            "step_size": table[..., 0],
            "n_steps": table[..., 1].astype(np.int64),
            "lp": table[..., 2],
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


def _flat_initial_params(model, x, y, layout: FlatLayout, options: MCMCOptions) -> dict:
    theta = flat_initial_values(
        model, x, y, layout, init_strategy=options.init_strategy, num_chains=options.num_chains
    )
    return {"theta": theta if options.num_chains > 1 else theta[0]}


def run_mcmc(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str,
    options: MCMCOptions,
    progress_bar: bool,
) -> Posterior:
    """Run Pyro's ``MCMC`` with the method's kernel; draws grouped by chain.

    Unless ``backend="pyro"``, a model whose latents are all global is sampled as one flat
    site ``theta`` under its compiled potential (:mod:`pyro_bnn.potential`); otherwise the
    kernel runs on the model itself.
    """
    build_kernel = KERNELS[method][1]
    potential = None
    if options.backend != "pyro":
        potential = flat_potential(model, x, y, backend=options.backend)
    layout = None if potential is None else potential.layout
    if potential is not None:
        initial = _flat_initial_params(model, x, y, layout, options)
        potential(initial["theta"].reshape(-1, layout.size)[0])  # compile before sampling
        kernel = build_kernel(options, potential_fn=lambda params: potential(params["theta"]))
        args, mcmc_kwargs = (), {"initial_params": initial}
    else:
        kernel = build_kernel(options, model=model)
        args, mcmc_kwargs = (x, y), {}
    recorder = _DrawRecorder()
    mcmc = MCMC(
        kernel,
        num_samples=options.num_samples,
        warmup_steps=options.warmup_steps,
        num_chains=options.num_chains,
        disable_progbar=not progress_bar,
        hook_fn=recorder,
        **mcmc_kwargs,
    )
    start = time.perf_counter()
    mcmc.run(*args)
    run_s = time.perf_counter() - start
    samples = mcmc.get_samples(group_by_chain=True)
    if layout is not None:
        samples = layout.constrain(samples["theta"])
    draws = {k: v.detach() for k, v in samples.items()}
    stats = recorder.stats(options.num_chains, options.num_samples)
    diverging = np.zeros((options.num_chains, options.num_samples), dtype=bool)
    for chain, indices in enumerate(mcmc.diagnostics()["divergences"].values()):
        diverging[chain, [int(i) for i in indices]] = True
    stats["diverging"] = diverging
    return Posterior(
        model=model,
        method=method,
        draws=draws,
        x_train=x,
        y_train=y,
        mcmc=mcmc,
        sample_stats=stats,
        timings={"sampling_s": run_s, "gradients": kernel.num_gradients},
    )
