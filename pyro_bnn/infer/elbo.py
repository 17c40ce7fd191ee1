"""A fast ELBO for autoguides: −ELBO = E_q[U(θ)] − H[q].

U is the model's flat, compiled potential (:class:`pyro_bnn.potential.Potential`): the
negative log joint in unconstrained space, Jacobians included, so this is exactly Pyro's
``Trace_ELBO`` objective for ``AutoNormal`` and ``AutoContinuous`` guides, with the
guide's entropy in closed form. For ``AutoDelta`` (MAP, a point in constrained space) the
"entropy" is −log|det ∂T/∂θ|, which turns U back into −log p(y, T(θ)): Trace_ELBO's loss
for a Delta guide. It is a plain loss callable, so Pyro's ``SVI`` runs it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import torch
from pyro.infer.autoguide import (
    AutoContinuous,
    AutoDelta,
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

from pyro_bnn.potential import FlatLayout, Potential

__all__ = ["PotentialELBO", "draw", "noise_size", "supports"]

_LOG_2PI_E = 1.0 + math.log(2 * math.pi)


def supports(guide, potential: Potential) -> bool:
    """Whether ``guide``'s latent layout is the potential's (same sites, same order)."""
    if isinstance(guide, AutoNormal):
        return True
    if isinstance(guide, AutoDelta):
        # a subclass that draws its own values (MC dropout's masks) gives them by
        # point_values(); any other override of forward is not known here
        if type(guide).forward is not AutoDelta.forward and not hasattr(guide, "point_values"):
            return False
        sites = tuple(name for name, _ in guide.prototype_trace.iter_stochastic_nodes())
        return sites == potential.layout.names
    if isinstance(guide, AutoContinuous):
        return tuple(guide._unconstrained_shapes) == potential.layout.names
    return False


# the guides whose draw is written out here, and the parameters it reads
_DRAWN = {
    AutoDiagonalNormal: ("loc", "scale"),
    AutoLowRankMultivariateNormal: ("loc", "scale", "cov_factor"),
    AutoMultivariateNormal: ("loc", "scale", "scale_tril"),
}


def noise_size(guide, layout: FlatLayout) -> int:
    """How many standard normals one draw of ``guide`` takes (see :func:`draw`)."""
    if isinstance(guide, AutoDelta):
        return 0
    if isinstance(guide, AutoLowRankMultivariateNormal):
        return layout.size + guide.cov_factor.shape[-1]
    return layout.size


def draw(
    guide, values: dict[str, torch.Tensor], noise: torch.Tensor, layout: FlatLayout
) -> tuple[torch.Tensor, torch.Tensor]:
    """One reparameterised draw θ of ``guide`` from standard normal ``noise`` and the
    guide's entropy, given its constrained parameter ``values`` by attribute (for
    ``AutoDelta``: by site; θ is the point and the "entropy" −log|det ∂T/∂θ|)."""
    if isinstance(guide, AutoDelta):
        theta = layout.flatten({name: values[name] for name in layout.names})
        log_det = sum(
            t.log_abs_det_jacobian(block, t(block)).sum()
            for t, block in zip(layout.transforms, layout.split(theta).values(), strict=True)
        )
        return theta, -log_det
    loc, scale = values["loc"], values["scale"]
    if isinstance(guide, AutoLowRankMultivariateNormal):
        return _lowrank_sample(loc, scale, values["cov_factor"], noise)
    if isinstance(guide, AutoMultivariateNormal):
        scale_tril = scale[..., None] * values["scale_tril"]
        entropy = scale_tril.diagonal().log().sum() + 0.5 * loc.numel() * _LOG_2PI_E
        return loc + scale_tril @ noise, entropy
    entropy = scale.log().sum() + 0.5 * loc.numel() * _LOG_2PI_E
    return loc + scale * noise, entropy


class PotentialELBO:
    """Loss callable ``(model, guide, x, y) -> −ELBO`` averaged over ``num_particles``."""

    def __init__(self, potential: Potential, *, num_particles: int = 1) -> None:
        self.potential = potential
        self.num_particles = num_particles

    def _sample(self, guide) -> tuple[torch.Tensor, torch.Tensor]:
        # PyroModule registers its parameters with Pyro (and so with SVI's optimiser)
        # only inside its own context, which a forward call would normally open
        with guide._pyro_context:
            return self._sample_in_context(guide)

    def _sample_in_context(self, guide) -> tuple[torch.Tensor, torch.Tensor]:
        layout = self.potential.layout
        kind = next((k for k in _DRAWN if isinstance(guide, k)), None)
        if kind is not None:  # direct: skips building a Distribution
            values = {name: getattr(guide, name) for name in _DRAWN[kind]}
            loc = values["loc"]
            noise = torch.randn(noise_size(guide, layout), dtype=loc.dtype, device=loc.device)
            return draw(guide, values, noise, layout)
        if isinstance(guide, AutoNormal):
            blocks, entropy = [], 0.0
            for name in self.potential.layout.names:
                loc, scale = guide._get_loc_and_scale(name)
                blocks.append((loc + scale * torch.randn_like(loc)).reshape(-1))
                entropy = entropy + scale.log().sum() + 0.5 * loc.numel() * _LOG_2PI_E
            return torch.cat(blocks), entropy
        if isinstance(guide, AutoDelta):
            if hasattr(guide, "point_values"):  # one draw of a guide of random points
                values = guide.point_values()
            else:
                values = {name: operator.attrgetter(name)(guide) for name in layout.names}
            return draw(guide, values, torch.empty(0), layout)
        q = guide.get_posterior()
        return q.rsample(), q.entropy()

    def __call__(self, model: Callable, guide, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = 0.0
        for _ in range(self.num_particles):
            theta, entropy = self._sample(guide)
            loss = loss + self.potential(theta, x, y) - entropy
        return loss / self.num_particles


def _lowrank_sample(
    loc: torch.Tensor, scale: torch.Tensor, factor: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A draw (from d + r standard normals ``eps``) and the entropy of
    N(loc, S (W Wᵀ + I) S), S = diag(scale), W (d × r):
    ``AutoLowRankMultivariateNormal.get_posterior()`` without building the distribution.

    log det(W Wᵀ + I_d) = log det(I_r + Wᵀ W) (Sylvester), an r × r Cholesky."""
    d, r = factor.shape
    draw = loc + scale * (factor @ eps[d:] + eps[:d])
    capacitance = torch.eye(r, dtype=loc.dtype, device=loc.device) + factor.T @ factor
    half_log_det = torch.linalg.cholesky(capacitance).diagonal().log().sum()
    entropy = scale.log().sum() + half_log_det + 0.5 * d * _LOG_2PI_E
    return draw, entropy
