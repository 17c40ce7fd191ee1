"""The one chain runner: every method runs as independent chains, each decided by its own
seed, in worker processes where the machine allows; merged into one (chain, draw) layout,
checked, and returned as the :class:`~pyro_bnn.posterior.Posterior`, built here only.

A method supplies ``run_chain(model, x, y, *, name, seed, options, shared, progress_bar)``
(see :class:`~pyro_bnn.infer.methods.Method`) returning one :class:`Chain`. ``shared`` is
one dict per process, for what the chains of a process may share (a compiled potential).
Each chain runs in its own Pyro parameter store, seeded by its seed, so a chain gives the
same draws whichever process runs it (up to floating-point reduction order).

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
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
import torch
from tqdm import tqdm

from pyro_bnn.diagnostics import (
    ConvergenceWarning,
    SamplingWarning,
    issue_warnings,
    mixing_diagnostics,
    noise_diagnostics,
)
from pyro_bnn.posterior import Posterior
from pyro_bnn.replay import replay
from pyro_bnn.validation import left_support, short_error

if TYPE_CHECKING:
    from pyro_bnn.infer.methods import Method
    from pyro_bnn.infer.options import Options

__all__ = [
    "Chain",
    "chain_processes",
    "chain_seeds",
    "merge_chains",
    "run_chains",
    "run_method",
]


@dataclass
class Chain:
    """One chain's draws (1, draw, *site_shape), per-draw statistics (1, draw), its loss
    history (optimisers), convergence diagnostics and warnings, timings, its Pyro parameter
    store, the method's own picklable ``state`` that its predictive reads (a Laplace
    chain's Gaussian) and, when run in this process, the method's own object (Pyro's guide
    or MCMC)."""

    draws: dict[str, torch.Tensor]
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    diagnostics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    runner: Any = None
    state: Any = None
    param_state: dict = field(default_factory=lambda: {"params": {}, "constraints": {}})


def chain_seeds(num_chains: int) -> list[int]:
    """One seed per chain, drawn from torch's generator (so ``fit(seed=...)`` fixes them)."""
    return [int(s) for s in torch.randint(0, 2**31 - 1, (num_chains,))]


def chain_processes(requested: int | None, num_chains: int) -> int:
    """How many worker processes to use: ``requested``, or by default one per chain up to
    the machine's cores (1 means: run every chain in this process)."""
    if requested is not None:
        return max(1, min(requested, num_chains))
    return max(1, min(num_chains, os.cpu_count() or 1))


def _unpicklable(model: Any, payload: tuple) -> str | None:
    """Why ``payload`` (the model and the method's options; the data tensors always
    travel) cannot go to a spawned worker, or None if it can."""
    if getattr(type(model), "__module__", None) == "__main__":
        return f"the model's class {type(model).__name__} is defined in __main__"
    try:
        pickle.dumps(payload)
    except Exception as error:  # lambdas, local functions, open handles...
        return f"the model or options cannot be pickled ({error})"
    return None


def _main_is_importable() -> bool:
    """Whether a spawned worker can re-import the main module safely: an interactive
    session or ``python -c`` has no file; a script that does not guard its top level with
    ``if __name__ == "__main__":`` would run again in every worker."""
    import __main__

    path = getattr(__main__, "__file__", None)
    if path is None:
        return True  # interactive: spawn does not re-run anything
    spec = getattr(__main__, "__spec__", None)
    if spec is not None:
        return True  # `python -m module`: workers import it by name, guarded by convention
    try:
        with open(path, encoding="utf-8") as source:
            return "__main__" in source.read()
    except OSError:
        return False


def _noise_scale(
    model: Any, draws: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> np.ndarray | None:
    """The likelihood's noise sd (median over rows) at up to 50 of a chain's draws, on up
    to 500 training rows; None for classifiers and for a noise scale that is fixed (the
    same at every draw)."""
    if not torch.is_floating_point(y):
        return None
    flat = {name: value[0] for name, value in draws.items()}
    num = next(iter(flat.values())).shape[0]
    pick = torch.linspace(0, num - 1, min(num, 50)).round().long().unique()
    rows = torch.linspace(0, len(x) - 1, min(len(x), 500)).round().long().unique()
    obs = replay(model, {name: value[pick] for name, value in flat.items()}, x[rows])
    if obs.noise_var is None:
        return None
    sd = obs.noise_var.double().clamp_min(0).sqrt().median(-1).values
    if bool((sd == sd[0]).all()):
        return None
    return sd.cpu().numpy()


def _remedy(options: Options) -> str:
    """The likely cause of a run that blew up, in terms of the method's own options."""
    if hasattr(options, "lr"):
        return f"lower lr (now {options.lr:g}), or standardise y"
    if hasattr(options, "batch_size") and hasattr(options, "step_size"):
        return (
            f"the step size is too large for this model: lower step_size "
            f"(now {options.step_size:g}), or standardise y"
        )
    return "the sampler has not reached the posterior: run longer, or standardise y"


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_group(
    method: Method,
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: list[int],
    options: Options,
    progress_bar: bool,
    keep_runners: bool = True,
) -> list[Chain]:
    """One chain per seed, one after another, in this process; each in its own parameter
    store. ``keep_runners=False`` (in a worker) drops the method's own objects, which do
    not pickle."""
    shared: dict[str, Any] = {}
    chains = []
    for seed in seeds:
        with pyro.get_param_store().scope() as state:
            pyro.set_rng_seed(seed)
            began = time.perf_counter()
            chain = method.run_chain(
                model,
                x,
                y,
                name=method.name,
                seed=seed,
                options=options,
                shared=shared,
                progress_bar=progress_bar,
            )
            chain.timings.setdefault("chain_s", time.perf_counter() - began)
            try:
                noise = _noise_scale(model, chain.draws, x, y)
            except ValueError as error:  # Pyro's check of a distribution's parameters
                if not left_support(error):
                    raise
                raise FloatingPointError(
                    f"{method.name}: the draws put a distribution's parameter outside its "
                    f"support ({short_error(error)[:100]}...); {_remedy(options)}"
                ) from None
            if noise is not None:
                found = noise_diagnostics(noise, y, method=method.name, remedy=_remedy(options))
                chain.diagnostics.update(found[0])
                chain.warnings.extend(found[1])
        chain.param_state = state
        if not keep_runners:
            chain.runner = None
        chains.append(chain)
    return chains


def run_chains(
    method: Method,
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: list[int],
    processes: int,
    options: Options,
    progress_bar: bool,
) -> list[Chain]:
    """Run one chain per seed, split over ``processes`` spawned workers (in this process
    if 1; also, with a one-line warning, if the model cannot travel to a worker or the
    main script would re-run in each worker)."""
    if processes > 1 and x.device.type != "cpu":
        processes = 1  # the chains share this process's device
    if processes > 1:
        reason = _unpicklable(model, (model, options))
        if reason is None and not _main_is_importable():
            reason = (
                "workers re-import the main script, which has no `if __name__ == '__main__':` guard"
            )
        if reason is not None:
            warnings.warn(f"running the chains one after another here: {reason}", stacklevel=4)
            processes = 1
    if processes == 1:
        return _run_group(
            method, model, x, y, seeds=seeds, options=options, progress_bar=progress_bar
        )
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
        tqdm(total=len(seeds), desc=f"{method.name} chains", disable=not progress_bar) as bar,
    ):
        futures = {
            pool.submit(
                _run_group,
                method,
                model,
                x,
                y,
                seeds=[seeds[i] for i in group],
                options=options,
                progress_bar=False,
                keep_runners=False,
            ): group
            for group in groups
        }
        for future in concurrent.futures.as_completed(futures):
            try:
                result = future.result()
            except concurrent.futures.process.BrokenProcessPool as error:
                raise RuntimeError(
                    "a chain's worker process died (out of memory, or the main module "
                    "failed when re-imported); pass chain_processes=1 to run the chains here"
                ) from error
            for index, chain in zip(futures[future], result, strict=True):
                chains[index] = chain
            bar.update(len(futures[future]))
    return chains  # type: ignore[return-value]


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


def _run_over_ranks(
    method: Method,
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: list[int],
    ranks: tuple[int, int],
    options: Options,
    progress_bar: bool,
) -> list[Chain] | None:
    """Chain i on rank i mod world size, from seed i; every chain on rank 0, in order (the
    method's own objects stay behind, as from worker processes); None on other ranks."""
    from pyro_bnn.distributed import gather_to_root

    rank, size = ranks
    mine = list(range(rank, len(seeds), size))
    failure: Exception | None = None
    try:
        chains = _run_group(method, model, x, y, seeds=[seeds[i] for i in mine],
                            options=options, progress_bar=progress_bar,
                            keep_runners=False)  # fmt: skip
        cpu = torch.device("cpu")
        payload: tuple = ("ok", [(i, _on(c, cpu)) for i, c in zip(mine, chains, strict=True)])
    except Exception as error:  # rank 0 must hear of it, not wait for it
        failure, payload = error, ("failed", f"rank {rank}: {type(error).__name__}: {error}")
    gathered = gather_to_root(payload)
    if failure is not None:
        raise failure
    if gathered is None:
        return None
    errors = [part for status, part in gathered if status == "failed"]
    if errors:
        raise RuntimeError(f"a chain failed on another rank: {errors[0]}")
    ordered: list[Chain | None] = [None] * len(seeds)
    for _, part in gathered:
        for index, chain in part:
            ordered[index] = _on(chain, x.device)
    return ordered  # type: ignore[return-value]


def _on(chain: Chain, device: torch.device) -> Chain:
    """``chain`` with its draws and parameters on ``device`` (chains travel between ranks
    on the CPU)."""
    chain.draws = {k: v.to(device) for k, v in chain.draws.items()}
    params = chain.param_state.get("params", {})
    chain.param_state["params"] = {k: v.to(device) for k, v in params.items()}
    return chain


def run_method(
    method: Method,
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    options: Options,
    given_options: dict[str, Any],
    progress_bar: bool,
    ranks: tuple[int, int] | None = None,
) -> Posterior | None:
    """Run ``options.chains`` chains of ``method``, merge and check them, and build the
    Posterior. Each failed check is a warning (a :class:`SamplingWarning` for samplers, a
    :class:`ConvergenceWarning` for optimisers) and lands in ``posterior.warnings``: the
    mixing checks, each chain's own (the loss history, a sampler's potential) and, for a
    learned noise scale, whether it exploded. ``ranks`` (rank, world size): part of a
    ``torch.distributed`` fit, the chains run in this process (data-parallel SVI), or
    spread over the ranks when ``distributed="chains"``; the posterior is built on rank 0
    (None elsewhere)."""
    from pyro_bnn.distributed import active

    start = time.perf_counter()
    num_chains = options.chains
    seeds = chain_seeds(num_chains)
    if ranks is not None and active() is None:
        chains = _run_over_ranks(method, model, x, y, seeds=seeds, ranks=ranks,
                                 options=options, progress_bar=progress_bar)  # fmt: skip
        if chains is None:
            return None
    else:
        processes = chain_processes(options.chain_processes, num_chains)
        chains = run_chains(
            method,
            model,
            x,
            y,
            seeds=seeds,
            # a worker process would not be part of the data-parallel fit (or simulation)
            processes=1 if ranks is not None or active() is not None else processes,
            options=options,
            progress_bar=progress_bar,
        )
    draws, stats, timings = merge_chains(chains)
    diagnostics, mixing = mixing_diagnostics(
        draws, stats, method=method.name, warn=method.samples_posterior
    )
    converging: list[str] = []
    for index, chain in enumerate(chains):
        for key, value in chain.diagnostics.items():
            diagnostics[key if num_chains == 1 else f"chain{index}_{key}"] = value
        prefix = "" if num_chains == 1 else f"chain {index}: "
        converging += [prefix + message for message in chain.warnings]
    if not method.samples_posterior and num_chains > 1:
        diagnostics["rhat_ess_note"] = (
            "R-hat/ESS across chains measure how far apart independent optima are, not "
            "sampler convergence"
        )
    issue_warnings(mixing, category=SamplingWarning)
    # a sampler's chain that blew up is a sampling failure; an optimiser's, a convergence one
    chain_category = SamplingWarning if method.samples_posterior else ConvergenceWarning
    issue_warnings(converging, category=chain_category)
    return Posterior(
        model=model,
        method=method.name,
        draws=draws,
        x_train=x,
        y_train=y,
        runners=[c.runner for c in chains if c.runner is not None],
        losses=[c.losses for c in chains] if any(c.losses for c in chains) else [],
        sample_stats=stats,
        diagnostics=diagnostics,
        warnings=mixing + converging,
        param_states=[c.param_state for c in chains],
        states=[c.state for c in chains],
        predictive=None if method.predictive is None else method.predictive(options),
        options=dict(given_options),
        wall_time=time.perf_counter() - start,
        timings=timings,
    )
