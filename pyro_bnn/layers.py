"""Bayesian layers that accept a leading batch of weight draws.

``PyroModule[nn.Linear]`` calls ``F.linear``, which needs a 2-D weight. The layers here
also run many weight draws in one pass, in Pyro's plate layout: draws (posterior draws in
``replay``, particles in a vectorised ELBO, Pyro's ``Predictive(parallel=True)``) sit in a
plate left of the ``data`` plate, so a weight arrives as ``(*draws, 1, out, in)``, the 1
being the data plate's slot. Activations then carry ``(*draws, batch, features)``.

Example:
    >>> import torch
    >>> layer = Linear(3, 2)
    >>> layer(torch.randn(5, 3)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from pyro.poutine.runtime import effectful
from torch import nn

__all__ = ["BATCHED_LAYERS", "Conv2d", "Linear", "batched_linear", "layer_output", "mlp"]


def _sampled_output(module, x: torch.Tensor) -> torch.Tensor:
    return module.sampled_forward(x)


layer_output = effectful(_sampled_output, type="layer_output")
layer_output.__doc__ = """``module``'s output at ``x``: ``module.sampled_forward(x)`` unless a
handler (:class:`pyro_bnn.local_reparam.LocalReparameterization`) draws it another way.
Call it with ``name=<the module's Pyro name>``."""


def batched_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``F.linear`` for weights ``(*draws, 1, out, in)`` and biases ``(*draws, 1, out)``."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    if weight.shape[-3] != 1:
        raise ValueError(
            f"batched weights must have shape (*draws, 1, out, in) with the data plate's "
            f"slot, got {tuple(weight.shape)}"
        )
    out = torch.matmul(x, weight.squeeze(-3).transpose(-1, -2))
    # in place: matmul's backward does not need its output, and this tensor is
    # (draws × rows × units), the largest the model makes
    return out if bias is None else out.add_(bias)


def _new_layer(cls: type) -> nn.Module:
    return cls.__new__(cls)


class _PicklesAsItself:
    """Pyro pickles a ``PyroModule[nn.Linear]`` subclass as ``PyroModule[nn.Linear]``
    itself, which would turn these layers back into Pyro's in a worker process (losing
    batched draws and the ``layer_output`` effect, so local reparameterization and
    ``dvi``); unpickle as the class the layer is."""

    def __reduce__(self):
        state = getattr(self, "__getstate__", self.__dict__.copy)()
        return _new_layer, (type(self),), state


class Linear(_PicklesAsItself, PyroModule[nn.Linear]):
    """A ``PyroModule[nn.Linear]`` whose weight and bias may carry draw dimensions.

    Its output goes through :func:`layer_output`, so a handler may
    draw it from the posterior's moments instead (local reparameterization)."""

    unbatched_input_dim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_output(self, x, name=self._pyro_name)

    def sampled_forward(self, x: torch.Tensor) -> torch.Tensor:
        return batched_linear(x, self.weight, self.bias)

    @staticmethod
    def functional(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        return F.linear(x, weight, bias)


class Conv2d(_PicklesAsItself, PyroModule[nn.Conv2d]):
    """A ``PyroModule[nn.Conv2d]`` whose output goes through ``layer_output`` (local
    reparameterization); one weight draw at a time (batched draws fall back to
    :func:`pyro_bnn.replay.replay`'s sequential path)."""

    unbatched_input_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_output(self, x, name=self._pyro_name)

    def sampled_forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if weight.dim() != 4:
            raise ValueError(
                f"Conv2d takes one weight draw at a time, got weight {tuple(weight.shape)}"
            )
        return self.functional(x, weight, self.bias)

    def functional(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        return self._conv_forward(x, weight, bias)


# torch layer -> its Pyro counterpart, used by ``bayesianize``.
BATCHED_LAYERS: dict[type[nn.Module], type[PyroModule]] = {nn.Linear: Linear, nn.Conv2d: Conv2d}


def _activation(activation: type[nn.Module]) -> nn.Module:
    """In place where the activation allows it: it acts on a fresh layer output."""
    if activation in (nn.ReLU, nn.LeakyReLU, nn.ELU):
        return activation(inplace=True)
    return activation()


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
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out), _activation(activation)]
    layers.append(nn.Linear(sizes[-1], out_features))
    return nn.Sequential(*layers)
