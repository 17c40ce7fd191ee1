"""ArviZ adapter: any :class:`~pyro_bnn.posterior.Posterior` as ``arviz.InferenceData``.

Built with ``az.from_dict``, so SVI, MCMC and every later method share one path.

Example:
    >>> import torch
    >>> from pyro_bnn import fit, zoo
    >>> x = torch.randn(25, 2); y = x.sum(-1)
    >>> post = fit(zoo.build("bayesian-linear-regression", in_features=2), x, y,
    ...            method="meanfield", num_steps=50, num_draws=20, progress_bar=False)
    >>> idata = to_inference_data(post)
    >>> sorted(idata.groups())[:3]
    ['constant_data', 'log_likelihood', 'observed_data']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from pyro_bnn.diagnostics import import_arviz, issue_warnings, row_diagnostics
from pyro_bnn.likelihoods import DATA_PLATE, OBS_SITE
from pyro_bnn.posterior import Posterior
from pyro_bnn.validation import as_inputs, as_targets, check_inputs_like, check_seed

if TYPE_CHECKING:
    import arviz as az

__all__ = ["prediction_diagnostics", "site_dims", "to_inference_data"]

_INPUT_DIMS = {2: ("feature",), 4: ("channel", "height", "width")}


def site_dims(model, site: str, shape: tuple[int, ...]) -> list[str]:
    """Dimension names of a latent site, taken from the layer that owns it.

    Linear weights get ``<layer>_out``/``<layer>_in``, conv weights out/in channels and
    kernel height/width; anything else ``<site>_dim_<i>``.
    """
    module_name, _, param = site.rpartition(".")
    module = None
    if isinstance(model, nn.Module):
        try:
            module = model.get_submodule(module_name) if module_name else model
        except AttributeError:
            module = None
    prefix = module_name or site
    names: tuple[str, ...] = ()
    if isinstance(module, nn.Linear):
        names = (f"{prefix}_out", f"{prefix}_in") if param == "weight" else (f"{prefix}_out",)
    elif isinstance(module, nn.Conv2d):
        names = (
            (
                f"{prefix}_out_channels",
                f"{prefix}_in_channels",
                f"{prefix}_kernel_h",
                f"{prefix}_kernel_w",
            )
            if param == "weight"
            else (f"{prefix}_out_channels",)
        )
    if len(names) == len(shape):
        return list(names)
    return [f"{site}_dim_{i}" for i in range(len(shape))]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _chain_draw(t: torch.Tensor, post: Posterior) -> np.ndarray:
    return _numpy(t.reshape(post.num_chains, post.num_draws, *t.shape[1:]))


def to_inference_data(
    posterior: Posterior,
    *,
    x=None,
    y=None,
    x_new=None,
    seed: int | None = None,
) -> az.InferenceData:
    """``InferenceData`` with posterior, sample_stats, log_likelihood, posterior_predictive,
    observed_data, constant_data and, for ``x_new``, predictions.

    ``x``/``y`` default to the training data. Every posterior draw is used. The
    sample_stats group's attributes carry the sampler's diagnostics (divergences, max R-hat,
    min ESS) and any warnings they raised.

    A posterior of one draw (``map``) gets a warning: its log_likelihood group holds a
    single draw, and ArviZ's LOO and WAIC need many draws from the posterior.
    """
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior must be a pyro_bnn Posterior, got {type(posterior).__name__}")
    if (x is None) != (y is None):
        raise ValueError("give both x and y, or neither (to use the training data)")
    check_seed(seed)
    if x is None:
        x, y = posterior.x_train, posterior.y_train
    else:
        x = as_inputs(x, name="x")
        check_inputs_like(x, posterior.x_train, name="x")
        y = as_targets(y, rows=len(x), name="y")
    if x_new is not None:
        x_new = as_inputs(x_new, name="x_new")
        check_inputs_like(x_new, posterior.x_train, name="x_new")
    if seed is not None:
        torch.manual_seed(seed)
    if posterior.num_chains * posterior.num_draws == 1:
        issue_warnings(
            [
                f"this {posterior.method} posterior is one point (one draw): az.loo and "
                "az.waic need many draws from the posterior (fit with a sampling or "
                "variational method, or several chains)"
            ],
            category=UserWarning,
        )
    az = import_arviz()

    model = posterior.model
    draws = {name: _numpy(value) for name, value in posterior.draws.items()}
    dims: dict[str, list[str]] = {
        name: site_dims(model, name, value.shape[2:]) for name, value in draws.items()
    }
    dims[OBS_SITE] = [DATA_PLATE]
    dims["x"] = [DATA_PLATE, *_INPUT_DIMS.get(x.dim(), [f"x_dim_{i}" for i in range(1, x.dim())])]

    observed = posterior.replay(x, y, log_joint=True)
    replayed = posterior.replay(x)  # fresh predictive draws of obs
    stats = dict(posterior.sample_stats)
    stats.setdefault("lp", _chain_draw(observed.log_joint, posterior))

    groups = {
        "posterior": draws,
        "sample_stats": stats,
        "log_likelihood": {OBS_SITE: _chain_draw(observed.log_lik, posterior)},
        "posterior_predictive": {OBS_SITE: _chain_draw(replayed.value, posterior)},
        "observed_data": {OBS_SITE: _numpy(y)},
        "constant_data": {"x": _numpy(x)},
    }
    extra = {}
    if x_new is not None:
        predicted = posterior.replay(x_new, name="x_new")
        extra = {
            "predictions": {OBS_SITE: _chain_draw(predicted.value, posterior)},
            "predictions_constant_data": {"x": _numpy(x_new)},
            "pred_dims": {
                OBS_SITE: ["data_new"],
                "x": ["data_new", *dims["x"][1:]],
            },
        }
    idata = az.from_dict(**groups, dims=dims, **extra)
    attrs = {
        "inference_library": "pyro",
        "method": posterior.method,
        "wall_time_s": posterior.wall_time,
    }
    kl_weight = posterior.options.get("kl_weight", 1.0)
    if kl_weight != 1.0:  # a tempered ELBO: its draws do not target the posterior
        attrs["kl_weight"] = float(kl_weight)
        attrs["target"] = "tempered: p(y | w)^(1/kl_weight) p(w), not the posterior"
    for group in idata.groups():
        idata[group].attrs.update(attrs)
    if posterior.losses:
        # one row of ELBO values per chain (netCDF attributes are flat: chains concatenated)
        idata.sample_stats.attrs["elbo"] = -np.concatenate(
            [np.asarray(chain, dtype=np.float64) for chain in posterior.losses]
        )
        idata.sample_stats.attrs["elbo_steps_per_chain"] = [len(c) for c in posterior.losses]
    idata.sample_stats.attrs.update(posterior.diagnostics)
    if posterior.warnings:
        idata.sample_stats.attrs["warnings"] = list(posterior.warnings)
    return idata


def prediction_diagnostics(posterior: Posterior, x) -> dict[str, float]:
    """Worst-case convergence of the predictive mean f(x_i) over the rows of ``x``.

    Returns ``min_ess`` (ArviZ bulk ESS) and ``max_rhat`` (rank-normalised split R-hat,
    which also splits a single chain in two) over the rows.

    Example:
        >>> import torch, pyro_bnn
        >>> from pyro_bnn.zoo import build
        >>> x, y = torch.randn(20, 2), torch.randn(20)
        >>> post = pyro_bnn.fit(build("bayesian-linear-regression", in_features=2), x, y,
        ...                     method="meanfield", num_steps=5, num_draws=40,
        ...                     progress_bar=False)
        >>> sorted(prediction_diagnostics(post, x))
        ['max_rhat', 'min_ess']
    """
    loc = posterior.replay(x).loc.reshape(posterior.num_chains, posterior.num_draws, -1)
    return row_diagnostics(_numpy(loc))
