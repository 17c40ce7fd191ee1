"""Independent chains: seeded, run in worker processes where the machine allows, merged
into one (chain, draw) layout, then checked (divergences, R-hat, ESS).

A sampler supplies a module-level ``run_group(model, x, y, *, seeds, **kwargs)`` that runs
one chain per seed in the calling process and returns a :class:`Chain` for each. The
chain's seed alone decides its start and its randomness, so a chain gives the same draws
whichever process runs it (up to floating-point reduction order).

Example:
    >>> import numpy as np, torch
    >>> chains = [Chain(draws={"w": torch.zeros(1, 4)}, sample_stats={"lp": np.zeros((1, 4))})
    ...           for _ in range(2)]
    >>> merge_chains(chains)[0]["w"].shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pyro_bnn.arviz import row_diagnostics
from pyro_bnn.posterior import Posterior

__all__ = [
    "MIN_ESS_PER_CHAIN",
    "RHAT_THRESHOLD",
    "Chain",
    "SamplingWarning",
    "chain_processes",
    "chain_seeds",
    "diagnose",
    "merge_chains",
    "run_chains",
    "sample_chains",
]

# Vehtari et al. 2021: R-hat below 1.01 and a bulk ESS of at least 100 per chain
RHAT_THRESHOLD = 1.01
MIN_ESS_PER_CHAIN = 100


class SamplingWarning(UserWarning):
    """A sampler's diagnostics suggest its draws do not represent the posterior."""


@dataclass
class Chain:
    """One chain's draws (1, draw, *site_shape), per-draw statistics (1, draw), timings and,
    when run in this process, the method's own object (e.g. Pyro's ``MCMC``)."""

    draws: dict[str, torch.Tensor]
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    runner: Any = None


def chain_seeds(num_chains: int) -> list[int]:
    """One seed per chain, drawn from torch's generator (so ``fit(seed=...)`` fixes them)."""
    return [int(s) for s in torch.randint(0, 2**31 - 1, (num_chains,))]


def chain_processes(requested: int | None, num_chains: int) -> int:
    """How many worker processes to use: ``requested``, or by default one per chain up to
    the machine's cores (1 means: run every chain in this process)."""
    if requested is not None:
        return max(1, min(requested, num_chains))
    return max(1, min(num_chains, os.cpu_count() or 1))


def _unpicklable(model: Callable, payload: tuple) -> str | None:
    """Why ``payload`` (the model and the sampler's options; the data tensors always
    travel) cannot go to a spawned worker, or None if it can."""
    if getattr(type(model), "__module__", None) == "__main__":
        return f"the model's class {type(model).__name__} is defined in __main__"
    try:
        pickle.dumps(payload)
    except Exception as error:  # lambdas, local functions, open handles...
        return f"the model or options cannot be pickled ({error})"
    return None


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _in_worker(run_group: Callable[..., list[Chain]], *args, **kwargs) -> list[Chain]:
    """``run_group`` in a worker; the method's own objects stay behind (not picklable)."""
    chains = run_group(*args, **kwargs)
    for chain in chains:
        chain.runner = None
    return chains


def run_chains(
    run_group: Callable[..., list[Chain]],
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: list[int],
    processes: int,
    desc: str,
    progress_bar: bool,
    **kwargs,
) -> list[Chain]:
    """Run one chain per seed, split over ``processes`` spawned workers (in this process if
    1, or if the model cannot travel to a worker, with a warning saying why)."""
    if processes > 1:
        reason = _unpicklable(model, (model, kwargs))
        if reason is not None:
            warnings.warn(f"running the chains one after another: {reason}", stacklevel=3)
            processes = 1
    if processes == 1:
        return run_group(model, x, y, seeds=seeds, progress_bar=progress_bar, **kwargs)
    groups = [list(range(len(seeds)))[p::processes] for p in range(processes)]
    threads = max(1, (os.cpu_count() or 1) // processes)
    chains: list[Chain | None] = [None] * len(seeds)
    with (
        concurrent.futures.ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(threads,),
        ) as pool,
        tqdm(total=len(seeds), desc=f"{desc} chains", disable=not progress_bar) as bar,
    ):
        futures = {
            pool.submit(
                _in_worker,
                run_group,
                model,
                x,
                y,
                seeds=[seeds[i] for i in group],
                progress_bar=False,
                **kwargs,
            ): group
            for group in groups
        }
        for future in concurrent.futures.as_completed(futures):
            try:
                result = future.result()
            except concurrent.futures.process.BrokenProcessPool as error:
                raise RuntimeError(
                    "a chain's worker process died. Workers are spawned and re-import the "
                    "main module: in a script, call fit under `if __name__ == '__main__':`; "
                    "or pass chain_processes=1 to run the chains here"
                ) from error
            for index, chain in zip(futures[future], result, strict=True):
                chains[index] = chain
            bar.update(len(futures[future]))
    return chains  # type: ignore[return-value]


def sample_chains(
    run_group: Callable[..., list[Chain]],
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str,
    options: Any,
    progress_bar: bool,
) -> Posterior:
    """``options.num_chains`` chains of ``run_group(..., method=, options=)``, one seed
    each, over ``options.chain_processes`` workers; merged and diagnosed."""
    chains = run_chains(
        run_group,
        model,
        x,
        y,
        seeds=chain_seeds(options.num_chains),
        processes=chain_processes(options.chain_processes, options.num_chains),
        desc=method,
        progress_bar=progress_bar,
        method=method,
        options=options,
    )
    draws, stats, timings = merge_chains(chains)
    diagnostics, found = diagnose(draws, stats, method=method)
    return Posterior(
        model=model,
        method=method,
        draws=draws,
        x_train=x,
        y_train=y,
        mcmc=[c.runner for c in chains if c.runner is not None],
        sample_stats=stats,
        diagnostics=diagnostics,
        warnings=found,
        timings=timings,
    )


def merge_chains(chains: list[Chain]) -> tuple[dict, dict, dict]:
    """Draws and sample statistics concatenated along the chain axis; timings summed over
    chains (so ``sampling_s`` is process time, not wall time, when chains ran in parallel)."""
    draws = {k: torch.cat([c.draws[k] for c in chains]) for k in chains[0].draws}
    shared = set.intersection(*(set(c.sample_stats) for c in chains))
    stats = {k: np.concatenate([c.sample_stats[k] for c in chains]) for k in sorted(shared)}
    timings: dict[str, float] = {}
    for chain in chains:
        for k, v in chain.timings.items():
            timings[k] = timings.get(k, 0) + v
    return draws, stats, timings


def diagnose(
    draws: dict[str, torch.Tensor], sample_stats: dict[str, np.ndarray], *, method: str
) -> tuple[dict[str, float], list[str]]:
    """Divergences, the worst R-hat and the smallest bulk ESS over every latent coordinate,
    and a warning (also issued as a :class:`SamplingWarning`) for each that fails its
    threshold. With one chain, R-hat compares the chain's two halves."""
    num_chains, num_draws = next(iter(draws.values())).shape[:2]
    per_site = {
        name: row_diagnostics(value.detach().double().reshape(num_chains, num_draws, -1).numpy())
        for name, value in draws.items()
    }
    worst_rhat = max((d["max_rhat"], name) for name, d in per_site.items())
    least_ess = min((d["min_ess"], name) for name, d in per_site.items())
    diagnostics = {"max_rhat": worst_rhat[0], "min_ess_bulk": least_ess[0]}
    found = []
    if "diverging" in sample_stats:
        diagnostics["divergences"] = int(sample_stats["diverging"].sum())
        if diagnostics["divergences"]:
            found.append(
                f"{method}: {diagnostics['divergences']} divergent transitions of "
                f"{num_chains * num_draws}; raise target_accept_prob or reparameterise"
            )
    if worst_rhat[0] > RHAT_THRESHOLD:
        found.append(
            f"{method}: R-hat {worst_rhat[0]:.3g} at site {worst_rhat[1]!r} exceeds "
            f"{RHAT_THRESHOLD}; the chains have not mixed (run longer or more chains)"
        )
    if least_ess[0] < MIN_ESS_PER_CHAIN * num_chains:
        found.append(
            f"{method}: bulk ESS {least_ess[0]:.3g} at site {least_ess[1]!r} is below "
            f"{MIN_ESS_PER_CHAIN} per chain ({MIN_ESS_PER_CHAIN * num_chains})"
        )
    for message in found:
        warnings.warn(message, SamplingWarning, stacklevel=4)
    return diagnostics, found
