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
    AutoNormal,
)

from pyro_bnn.potential import Potential

__all__ = ["PotentialELBO", "supports"]

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
        if isinstance(guide, AutoDiagonalNormal):  # direct: skips building a Distribution
            loc, scale = guide.loc, guide.scale
            entropy = scale.log().sum() + 0.5 * loc.numel() * _LOG_2PI_E
            return loc + scale * torch.randn_like(loc), entropy
        if isinstance(guide, AutoNormal):
            blocks, entropy = [], 0.0
            for name in self.potential.layout.names:
                loc, scale = guide._get_loc_and_scale(name)
                blocks.append((loc + scale * torch.randn_like(loc)).reshape(-1))
                entropy = entropy + scale.log().sum() + 0.5 * loc.numel() * _LOG_2PI_E
            return torch.cat(blocks), entropy
        if isinstance(guide, AutoLowRankMultivariateNormal):
            return _lowrank_sample(guide.loc, guide.scale, guide.cov_factor)
        if isinstance(guide, AutoDelta):
            return self._delta_point(guide)
        q = guide.get_posterior()
        return q.rsample(), q.entropy()

    def _delta_point(self, guide: AutoDelta) -> tuple[torch.Tensor, torch.Tensor]:
        layout = self.potential.layout
        if hasattr(guide, "point_values"):  # one draw of a guide of random points
            values = guide.point_values()
        else:
            values = {name: operator.attrgetter(name)(guide) for name in layout.names}
        theta = layout.flatten(values)
        log_det = sum(
            t.log_abs_det_jacobian(block, t(block)).sum()
            for t, block in zip(layout.transforms, layout.split(theta).values(), strict=True)
        )
        return theta, -log_det

    def __call__(self, model: Callable, guide, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = 0.0
        for _ in range(self.num_particles):
            theta, entropy = self._sample(guide)
            loss = loss + self.potential(theta, x, y) - entropy
        return loss / self.num_particles


def _lowrank_sample(
    loc: torch.Tensor, scale: torch.Tensor, factor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A draw and the entropy of N(loc, S (W Wᵀ + I) S), S = diag(scale), W (d × r):
    ``AutoLowRankMultivariateNormal.get_posterior()`` without building the distribution.

    log det(W Wᵀ + I_d) = log det(I_r + Wᵀ W) (Sylvester), an r × r Cholesky."""
    d, r = factor.shape
    eps = torch.randn(d + r, dtype=loc.dtype, device=loc.device)
    draw = loc + scale * (factor @ eps[d:] + eps[:d])
    capacitance = torch.eye(r, dtype=loc.dtype, device=loc.device) + factor.T @ factor
    half_log_det = torch.linalg.cholesky(capacitance).diagonal().log().sum()
    entropy = scale.log().sum() + half_log_det + 0.5 * d * _LOG_2PI_E
    return draw, entropy
