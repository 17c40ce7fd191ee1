"""Per-site mean and standard deviation of a mean-field Gaussian guide.

Bayes by Backprop's posterior is N(μ, σ²) per weight with σ = softplus(ρ): Pyro's
``AutoNormal`` (one (μ, ρ) pair per site) and ``AutoDiagonalNormal`` (one flat pair, the
``meanfield`` method) are both exactly that family, since both constrain their scale with
``softplus``. :func:`site_loc_scale` reads (μ, σ) of one site from either, which is what
local reparameterization and pruning by signal-to-noise ratio need.

Example:
    >>> import torch
    >>> from pyro.infer.autoguide import AutoDiagonalNormal
    >>> from pyro_bnn.zoo import build
    >>> model = build("mlp-regression", in_features=2, hidden=(3,))
    >>> guide = AutoDiagonalNormal(model); _ = guide(torch.zeros(4, 2), torch.zeros(4))
    >>> [t.shape for t in site_loc_scale(guide, "net.0.weight")]
    [torch.Size([3, 2]), torch.Size([3, 2])]
"""

from __future__ import annotations

import torch
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal

__all__ = ["MEANFIELD_GUIDES", "all_loc_scale", "site_loc_scale", "unpack_loc_scale"]

MEANFIELD_GUIDES = (AutoNormal, AutoDiagonalNormal)


def site_loc_scale(guide, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, σ) of site ``name`` in unconstrained space (the site's own space for weights),
    differentiable with respect to the guide's parameters."""
    if guide.prototype_trace is None:
        raise ValueError("the guide has not been run yet: call guide(x, y) once first")
    if name not in guide.prototype_trace.nodes:
        raise KeyError(f"the guide has no site {name!r}")
    if isinstance(guide, AutoNormal):
        return guide._get_loc_and_scale(name)
    if isinstance(guide, AutoDiagonalNormal):
        return _diagonal_normal_sites(guide)[name]
    raise TypeError(
        f"{type(guide).__name__} is not a mean-field Gaussian guide; "
        f"use one of {', '.join(g.__name__ for g in MEANFIELD_GUIDES)}"
    )


def all_loc_scale(guide) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(μ, σ) of every site, as :func:`site_loc_scale` gives them, in one pass."""
    if guide.prototype_trace is None:
        raise ValueError("the guide has not been run yet: call guide(x, y) once first")
    if isinstance(guide, AutoDiagonalNormal):
        return _diagonal_normal_sites(guide)
    names = [name for name, _ in guide.prototype_trace.iter_stochastic_nodes()]
    return {name: site_loc_scale(guide, name) for name in names}


def _diagonal_normal_sites(guide: AutoDiagonalNormal) -> dict[str, tuple[torch.Tensor, ...]]:
    """(μ, σ) of every site of an ``AutoDiagonalNormal``: its flat loc and scale unpacked."""
    with guide._pyro_context:
        return unpack_loc_scale(guide, guide.loc, guide.scale)


def unpack_loc_scale(
    guide: AutoDiagonalNormal, loc: torch.Tensor, scale: torch.Tensor
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{site: (μ, σ)} of an ``AutoDiagonalNormal`` whose flat loc and scale are ``loc`` and
    ``scale`` (the guide's own, or a compiled step's inputs)."""
    scales = dict((site["name"], v) for site, v in guide._unpack_latent(scale))
    return {site["name"]: (v, scales[site["name"]]) for site, v in guide._unpack_latent(loc)}
