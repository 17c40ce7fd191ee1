"""Bayesian layers that accept a leading batch of weight draws.

``PyroModule[nn.Linear]`` calls ``F.linear``, which needs a 2-D weight. The layers here
also accept weights with leading batch dimensions ``(*draws, out, in)`` so that many
posterior draws (or vectorised ELBO particles) run in one pass; activations then carry the
same leading dimensions: ``(*draws, batch, features)``.

Example:
    >>> import torch
    >>> layer = Linear(3, 2)
    >>> layer(torch.randn(5, 3)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

__all__ = ["BATCHED_LAYERS", "Linear", "batched_linear", "mlp"]


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` that broadcasts leading draw dimensions of ``weight`` and ``bias``."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    out = torch.matmul(x, weight.transpose(-1, -2))
    if bias is not None:
        out = out + bias.unsqueeze(-2)
    return out


class Linear(PyroModule[nn.Linear]):
    """A ``PyroModule[nn.Linear]`` whose weight and bias may carry draw dimensions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batched_linear(x, self.weight, self.bias)


# torch layer -> its batched Pyro counterpart, used by ``bayesianize``.
BATCHED_LAYERS: dict[type[nn.Module], type[PyroModule]] = {nn.Linear: Linear}


def mlp(
    in_features: int,
    hidden: tuple[int, ...],
    out_features: int,
    *,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """A plain ``nn.Sequential`` MLP, ready for :func:`pyro_bnn.bayesianize`."""
    sizes = (in_features, *hidden)
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), activation()]
    layers.append(nn.Linear(sizes[-1], out_features))
    return nn.Sequential(*layers)
