"""Turn a plain ``torch.nn.Module`` into a Bayesian ``PyroModule`` in place.

Example:
    >>> import torch
    >>> from pyro_bnn.priors import GaussianPrior
    >>> net = bayesianize(torch.nn.Sequential(torch.nn.Linear(2, 3)), GaussianPrior())
    >>> sorted(net[0]._pyro_samples)
    ['bias', 'weight']
"""

from __future__ import annotations

from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyro_bnn.layers import BATCHED_LAYERS
from pyro_bnn.priors import PriorHook

__all__ = ["bayesian_parameter_names", "bayesianize"]


def bayesianize(net: nn.Module, prior: PriorHook) -> PyroModule:
    """Replace every parameter the prior selects by a ``PyroSample`` from that prior.

    The module is converted in place (``pyro.nn.module.to_pyro_module_``); ``nn.Linear``
    becomes :class:`pyro_bnn.layers.Linear`, which also runs batches of weight draws.
    Parameters for which ``prior`` returns ``None`` stay ordinary (deterministic) parameters.
    Returns ``net`` itself.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"bayesianize expects a torch.nn.Module, got {type(net).__name__}")
    to_pyro_module_(net)
    for module in net.modules():
        for torch_type, batched_type in BATCHED_LAYERS.items():
            if type(module) is PyroModule[torch_type]:
                module.__class__ = batched_type
    for module_name, module in list(net.named_modules()):
        for param_name, param in list(module.named_parameters(recurse=False)):
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            distribution = prior(full_name, module, param.detach())
            if distribution is not None:
                setattr(module, param_name, PyroSample(distribution))
    return net


def bayesian_parameter_names(net: nn.Module) -> list[str]:
    """Qualified names of the ``PyroSample`` attributes of ``net`` (its latent sites)."""
    names = []
    for module_name, module in net.named_modules():
        for sample_name in getattr(module, "_pyro_samples", {}):
            names.append(f"{module_name}.{sample_name}" if module_name else sample_name)
    return names
