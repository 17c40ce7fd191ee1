"""``fit(model, x, y, method=...)``: one entry point over Pyro's SVI and MCMC.

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

import time
from collections.abc import Callable

import pyro

from pyro_bnn.infer.mcmc import KERNELS, run_mcmc
from pyro_bnn.infer.options import parse_options
from pyro_bnn.infer.sgmcmc import SAMPLERS, run_sgmcmc
from pyro_bnn.infer.svi import GUIDES, run_svi
from pyro_bnn.posterior import Posterior
from pyro_bnn.validation import as_inputs, as_targets, check_model

__all__ = ["METHODS", "fit"]

_RUNNERS = {
    **{name: (options, run_svi) for name, (options, _) in GUIDES.items()},
    **{name: (options, run_mcmc) for name, (options, _) in KERNELS.items()},
    **{name: (options, run_sgmcmc) for name, (options, _) in SAMPLERS.items()},
}
METHODS: tuple[str, ...] = tuple(_RUNNERS)


def fit(
    model: Callable,
    x,
    y,
    *,
    method: str = "meanfield",
    progress_bar: bool = True,
    seed: int | None = None,
    **options,
) -> Posterior:
    """Approximate the posterior of ``model`` given data ``(x, y)``.

    ``model(x, y=None)`` must observe ``y`` at a site ``obs`` inside a plate ``data``.
    ``method`` is one of :data:`METHODS`; ``options`` are the method's keyword options
    (see ``pyro_bnn.infer.svi``, ``pyro_bnn.infer.mcmc`` and ``pyro_bnn.infer.sgmcmc``).
    Inputs may be numpy arrays or tensors; they are converted to float32 (labels to
    int64). The fit runs in its own Pyro parameter store, kept in ``Posterior.param_state``.
    """
    if method not in _RUNNERS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    options_type, runner = _RUNNERS[method]
    parsed = parse_options(options_type, method, options)
    x = as_inputs(x, name="x")
    y = as_targets(y, rows=len(x), name="y")
    with pyro.get_param_store().scope() as param_state:
        if seed is not None:
            pyro.set_rng_seed(seed)
        check_model(model, x, y)
        start = time.perf_counter()
        posterior = runner(model, x, y, method=method, options=parsed, progress_bar=progress_bar)
        posterior.wall_time = time.perf_counter() - start
    posterior.param_state = param_state
    posterior.options = {"method": method, **options}
    return posterior
