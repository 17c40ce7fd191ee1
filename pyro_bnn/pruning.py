"""Pruning a mean-field posterior by signal-to-noise ratio |μ|/σ (Blundell et al. 2015).

A weight whose posterior mean is small next to its posterior standard deviation carries
little signal. :func:`prune_by_snr` sets the lowest-SNR fraction of the network's weights
to zero in every posterior draw and returns a new :class:`~pyro_bnn.posterior.Posterior`
that predicts like any other.

Example:
    >>> import torch
    >>> from pyro_bnn import fit
    >>> from pyro_bnn.zoo import build
    >>> x, y = torch.randn(30, 2), torch.randn(30)
    >>> post = fit(build("mlp-regression", in_features=2, hidden=(8,)), x, y,
    ...            method="meanfield", num_steps=5, num_draws=4, progress_bar=False)
    >>> pruned = prune_by_snr(post, 0.5)
    >>> pruned_fraction(pruned)  # 16 of the 33 weights and biases
    0.4848...
"""

from __future__ import annotations

import dataclasses

import torch

from pyro_bnn.bayesianize import bayesian_parameter_names
from pyro_bnn.meanfield import site_loc_scale
from pyro_bnn.posterior import Posterior

__all__ = ["prune_by_snr", "pruned_fraction", "signal_to_noise"]


def signal_to_noise(posterior: Posterior) -> dict[str, torch.Tensor]:
    """|μ|/σ of every network weight and bias (the model's ``PyroSample`` sites) under a
    mean-field Gaussian guide (``meanfield``)."""
    if posterior.guide is None:
        raise TypeError(
            f"SNR pruning needs a mean-field Gaussian guide; method {posterior.method!r} has none"
        )
    names = bayesian_parameter_names(posterior.model)
    snr = {}
    with posterior.pyro_context(), torch.no_grad():
        for name in names:
            loc, scale = site_loc_scale(posterior.guide, name)
            snr[name] = loc.abs() / scale
    return snr


def prune_by_snr(posterior: Posterior, fraction: float) -> Posterior:
    """A copy of ``posterior`` whose lowest-SNR ``fraction`` of network weights (one global
    threshold over all layers, ties broken by order) are zero in every draw."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    snr = signal_to_noise(posterior)
    flat = torch.cat([v.reshape(-1) for v in snr.values()])
    num_pruned = round(fraction * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat)[:num_pruned]] = False
    draws, start = dict(posterior.draws), 0
    for name, value in snr.items():
        mask = keep[start : start + value.numel()].reshape(value.shape)
        draws[name] = posterior.draws[name] * mask
        start += value.numel()
    options = {**posterior.options, "pruned_fraction": num_pruned / flat.numel()}
    return dataclasses.replace(posterior, draws=draws, options=options)


def pruned_fraction(posterior: Posterior) -> float:
    """The fraction of network weights that are exactly zero in every draw."""
    names = bayesian_parameter_names(posterior.model)
    zero = sum(int((posterior.draws[n] == 0).all(dim=(0, 1)).sum()) for n in names)
    total = sum(posterior.draws[n][0, 0].numel() for n in names)
    return zero / total
