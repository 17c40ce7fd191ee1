"""Initial values for guides and samplers that do not draw from the prior.

Drawing the initial weights from the prior is Pyro's ``init_to_sample``; it fails for an
improper prior (log-uniform) and, for wide layers under a broad prior (a scale mixture
with σ1 = 1 over 1,200 inputs), starts with exploding activations. :func:`init_to_fan_in`
starts like torch's default layer initialisation instead.

Example:
    >>> import torch, pyro.distributions as dist
    >>> site = {"name": "net.0.weight", "fn": dist.Normal(0.0, 1.0).expand([4, 100]).to_event(2)}
    >>> value = init_to_fan_in(site)
    >>> value.shape, bool(value.abs().max() <= 0.1)
    (torch.Size([4, 100]), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.trace_struct import Trace
from torch.distributions import biject_to

__all__ = ["init_to_fan_in", "init_to_support_zero", "trace_at_support_zero"]


def init_to_support_zero(site: dict | None = None):
    """Every site at the image of zero under its support's bijection (0 for real sites,
    1 for positive ones). Unlike Pyro's ``init_to_feasible`` it never calls
    ``sample()``, so it serves improper priors too."""
    if site is None:
        return init_to_support_zero
    fn = site["fn"]
    zero = torch.zeros(fn.batch_shape + fn.event_shape)
    return biject_to(fn.support)(zero).detach()


def init_to_fan_in(site: dict | None = None, *, gain: float = 1.0):
    """Weights (sites named ``…weight``, shaped (out, in, …)) ~ U(−g/√fan_in, g/√fan_in)
    with ``gain`` g (torch's default Linear/Conv2d init has g = 1); every other site
    (biases, noise precision) at :func:`init_to_support_zero`."""
    if site is None:
        return lambda site: init_to_fan_in(site, gain=gain)
    fn = site["fn"]
    shape = fn.batch_shape + fn.event_shape
    if site["name"].rpartition(".")[2] == "weight" and len(shape) >= 2:
        bound = gain / math.sqrt(math.prod(shape[1:]))
        return torch.empty(shape).uniform_(-bound, bound)
    return init_to_support_zero(site)


def trace_at_support_zero(model: Callable, *args, **kwargs) -> Trace:
    """``model``'s trace with every latent at :func:`init_to_support_zero`, without
    gradients: what the model's structure (sites, shapes, supports) needs, and safe for
    improper priors, which cannot be sampled."""
    with torch.no_grad(), InitMessenger(init_to_support_zero):
        return poutine.trace(model).get_trace(*args, **kwargs)
