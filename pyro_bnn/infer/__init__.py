"""``fit(model, x, y, method=...)``: one entry point over every inference method.

The method is looked up once in the registry (:mod:`pyro_bnn.infer.methods`), its options
are checked, and the chain runner (:mod:`pyro_bnn.infer.chains`) runs its chains and
builds the :class:`~pyro_bnn.posterior.Posterior`.

Example:
    >>> import torch
    >>> from pyro_bnn import fit, zoo
    >>> model = zoo.build("bayesian-linear-regression", in_features=1, noise_scale=0.1)
    >>> x = torch.linspace(-1, 1, 30)[:, None]
    >>> post = fit(model, x, 3 * x[:, 0], method="meanfield", num_steps=300,
    ...            num_draws=100, progress_bar=False, seed=0)
    >>> post.draws["linear.weight"].shape
    torch.Size([1, 100, 1, 1])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pyro
import torch

from pyro_bnn.device import as_device, model_to, placed
from pyro_bnn.distributed import (
    MODES,
    DataParallel,
    check_shards,
    data_parallel,
    gather_rows,
    shared_seed,
    together,
    world,
)
from pyro_bnn.infer.chains import run_method
from pyro_bnn.infer.methods import REGISTRY
from pyro_bnn.infer.methods import method as lookup
from pyro_bnn.infer.options import parse_options
from pyro_bnn.posterior import Posterior
from pyro_bnn.validation import as_inputs, as_targets, check_model, check_seed

__all__ = ["METHODS", "fit"]

METHODS: tuple[str, ...] = tuple(REGISTRY)


def fit(
    model: Callable,
    x,
    y,
    *,
    method: str = "meanfield",
    progress_bar: bool = True,
    seed: int | None = None,
    device: str | torch.device | None = None,
    distributed: str | None = None,
    **options,
) -> Posterior | None:
    """Approximate the posterior of ``model`` given data ``(x, y)``.

    ``model(x, y=None)`` must observe ``y`` at a site ``obs`` inside a plate ``data``.
    ``method`` is one of :data:`METHODS`; ``options`` are the method's keyword options
    (its options class in :mod:`pyro_bnn.infer.svi`, :mod:`~pyro_bnn.infer.mcmc` or
    :mod:`~pyro_bnn.infer.sgmcmc`; ``num_chains`` independent chains for every method).
    Inputs may be numpy arrays or tensors; they are converted to float32 (labels to
    int64). Each chain runs in its own Pyro parameter store, kept in
    ``Posterior.param_states``. ``device`` (e.g. ``"cuda"``) places the model, the data and
    the inference on that torch device (the model is moved there; chains then run in this
    process); the posterior stays there and predicts there (default: the CPU).
    ``distributed``: ``"data"`` (data-parallel SVI: ``x``, ``y`` are this rank's shard) or
    ``"chains"`` (chains spread over ranks), inside an initialised ``torch.distributed``
    process group; the posterior is returned on rank 0, None on the other ranks (see
    :mod:`pyro_bnn.distributed`).
    """
    chosen = lookup(method)
    parsed = parse_options(chosen.options, method, options)
    check_seed(seed)
    if distributed is not None:
        _check_mode(distributed, chosen)
    with together(distributed is not None):  # a rank's bad shard stops every rank
        x = as_inputs(x, name="x")
        y = as_targets(y, rows=len(x), name="y")
        place = torch.device("cpu") if device is None else as_device(device)
    if device is not None:
        if isinstance(model, torch.nn.Module):
            model_to(model, place)
        x, y = x.to(place), y.to(place)
    plan, ranks = None, None
    if distributed is not None:
        plan, ranks, seed = _distributed_plan(distributed, x, y, seed)
    if seed is not None:
        pyro.set_rng_seed(seed)
    with placed(place), contextlib.ExitStack() as stack:
        if plan is not None:
            stack.enter_context(data_parallel(plan))
        with together(distributed is not None), pyro.get_param_store().scope():
            check_model(model, x, y)
            if chosen.precheck is not None:
                chosen.precheck(model, x, y, parsed)
        posterior = run_method(
            chosen,
            model,
            x,
            y,
            options=parsed,
            given_options={"method": method, **options},
            progress_bar=progress_bar and (ranks is None or ranks[0] == 0),
            ranks=ranks,
        )
    if posterior is not None and distributed is not None:
        posterior.options["distributed"] = distributed
    if plan is not None:  # the posterior holds every shard's rows, on rank 0 only
        posterior.x_train, posterior.y_train = gather_rows(x), gather_rows(y)
        return posterior if ranks[0] == 0 else None
    return posterior


def _check_mode(mode: str, chosen) -> None:
    """A known mode that ``chosen`` supports, inside a process group (the same verdict on
    every rank: it depends on the arguments alone)."""
    if mode not in MODES:
        raise ValueError(f"distributed must be one of {MODES} or None, got {mode!r}")
    world()
    if mode == "data" and not chosen.data_parallel:
        able = ", ".join(name for name, m in REGISTRY.items() if m.data_parallel)
        raise ValueError(f"distributed='data' runs SVI and SG-MCMC methods ({able}); "
                         f"{chosen.name!r} is not one: use distributed='chains'")  # fmt: skip


def _distributed_plan(mode: str, x: torch.Tensor, y: torch.Tensor, seed: int | None):
    """(data-parallel plan or None, (rank, world size), the seed every rank shares)."""
    rank, size = world()
    seed = shared_seed(seed)
    if mode == "chains":
        return None, (rank, size), seed
    check_shards(x, y)
    return DataParallel(size, rank), (rank, size), seed
