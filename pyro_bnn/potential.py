"""The model's potential energy on one flat unconstrained vector, JIT-traced.

U(θ) = −log p(y, T(θ)) − log|det ∂T/∂θ|, where θ concatenates every latent site in
unconstrained space and T maps each block to its site's support (``biject_to``). This is
the same potential Pyro's HMC builds, but as a single tensor function: NUTS moves one
site, and SVI evaluates its ELBO through it (``pyro_bnn.infer.elbo``). The model is
traced once per input shape with ``torch.jit.trace``, which removes Pyro's per-call
Python work (effect handlers, trace bookkeeping) from every gradient.

It applies to models whose latent sites all sit outside plates and whose structure does
not depend on the data values, which is every BNN here; :func:`flat_layout` says when not.

Example:
    >>> import torch
    >>> from pyro_bnn import zoo
    >>> model = zoo.build("bayesian-linear-regression", in_features=2)
    >>> x, y = torch.randn(5, 2), torch.randn(5)
    >>> potential = Potential(model, x, y)
    >>> potential.layout.size
    3
    >>> potential(torch.zeros(3)).shape
    torch.Size([])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

__all__ = ["FlatLayout", "Potential", "flat_layout"]


@dataclass(frozen=True)
class FlatLayout:
    """Where each latent site lives in the flat unconstrained vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]  # constrained shapes
    unconstrained_shapes: tuple[torch.Size, ...]
    transforms: tuple  # unconstrained -> constrained, one per site

    @property
    def size(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.unconstrained_shapes)

    def split(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unconstrained blocks of ``theta`` (..., size), shaped like their sites."""
        blocks, start = {}, 0
        batch = theta.shape[:-1]
        for name, shape in zip(self.names, self.unconstrained_shapes, strict=True):
            n = int(torch.Size(shape).numel())
            blocks[name] = theta[..., start : start + n].reshape(batch + torch.Size(shape))
            start += n
        return blocks

    def constrain(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Site values (constrained) for a flat vector or a batch of them."""
        return {
            name: transform(block)
            for (name, block), transform in zip(
                self.split(theta).items(), self.transforms, strict=True
            )
        }

    def flatten(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The flat unconstrained vector of constrained site ``values``."""
        return torch.cat(
            [
                transform.inv(values[name]).reshape(-1)
                for name, transform in zip(self.names, self.transforms, strict=True)
            ]
        )


def flat_layout(model: Callable, x: torch.Tensor, y: torch.Tensor) -> FlatLayout | None:
    """The flat layout of ``model``'s latent sites, or None if a latent sits in a plate."""
    with torch.no_grad():
        trace = poutine.trace(model).get_trace(x, y)
    names, shapes, unconstrained, transforms = [], [], [], []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        if site["cond_indep_stack"]:
            return None
        transform = biject_to(site["fn"].support)
        names.append(name)
        shapes.append(site["value"].shape)
        unconstrained.append(transform.inv(site["value"]).shape)
        transforms.append(transform)
    return FlatLayout(tuple(names), tuple(shapes), tuple(unconstrained), tuple(transforms))


class Potential:
    """U(θ) of ``model`` at data ``(x, y)``: a scalar function of the flat vector θ.

    ``jit=True`` traces the model once per distinct input shape. Call it on other data
    with ``potential(theta, x, y)``.
    """

    def __init__(self, model: Callable, x: torch.Tensor, y: torch.Tensor, *, jit: bool = True):
        layout = flat_layout(model, x, y)
        if layout is None:
            raise ValueError("the flat potential needs every latent site outside plates")
        self.model, self.x, self.y, self.jit, self.layout = model, x, y, jit, layout
        self._compiled: dict[tuple, Callable] = {}

    def _energy(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        values, log_det = {}, theta.new_zeros(())
        for (name, block), transform in zip(
            self.layout.split(theta).items(), self.layout.transforms, strict=True
        ):
            value = transform(block)
            values[name] = value
            log_det = log_det + transform.log_abs_det_jacobian(block, value).sum()
        trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(x, y)
        return -(trace.log_prob_sum(site_filter=lambda _, s: not site_is_subsample(s)) + log_det)

    def __call__(
        self, theta: torch.Tensor, x: torch.Tensor | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.x if x is None else x
        y = self.y if y is None else y
        if not self.jit:
            return self._energy(theta, x, y)
        key = (tuple(theta.shape), tuple(x.shape), tuple(y.shape), y.dtype)
        if key not in self._compiled:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._compiled[key] = torch.jit.trace(
                    self._energy, (theta.detach(), x, y), check_trace=False
                )
        return self._compiled[key](theta, x, y)
