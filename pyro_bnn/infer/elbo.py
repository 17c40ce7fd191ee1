"""A fast ELBO for Gaussian guides: −ELBO = E_q[U(θ)] − H[q].

U is the model's flat, JIT-traced potential (:class:`pyro_bnn.potential.Potential`): the
negative log joint in unconstrained space, Jacobians included, so this is exactly Pyro's
``Trace_ELBO`` objective for ``AutoNormal`` and ``AutoContinuous`` guides, with the
guide's entropy in closed form. It is a plain loss callable, so Pyro's ``SVI`` runs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro.infer.autoguide import AutoContinuous, AutoDiagonalNormal, AutoNormal

from pyro_bnn.potential import Potential

__all__ = ["PotentialELBO", "supports"]

_LOG_2PI_E = 1.0 + math.log(2 * math.pi)


def supports(guide, potential: Potential) -> bool:
    """Whether ``guide``'s latent layout is the potential's (same sites, same order)."""
    if isinstance(guide, AutoNormal):
        return True
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
        q = guide.get_posterior()
        return q.rsample(), q.entropy()

    def __call__(self, model: Callable, guide, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = 0.0
        for _ in range(self.num_particles):
            theta, entropy = self._sample(guide)
            loss = loss + self.potential(theta, x, y) - entropy
        return loss / self.num_particles
