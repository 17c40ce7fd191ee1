"""Where a fit runs: a torch device, checked, and the context that places new tensors on it.

Example:
    >>> from pyro_bnn.device import as_device
    >>> as_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch.distributions import Distribution

from pyro_bnn.likelihoods import Likelihood

__all__ = ["as_device", "model_to", "placed"]


def as_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine, or a clear error."""
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got "
                         f"{device!r} ({error})") from None  # fmt: skip
    if found.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU here "
                               f"(torch {torch.__version__})")  # fmt: skip
        if found.index is not None and found.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} asked for, but this machine has "
                               f"{torch.cuda.device_count()} CUDA GPU(s)")  # fmt: skip
    elif found.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {device!r} asked for, but MPS is not available here")
    return found


@contextlib.contextmanager
def placed(device: torch.device) -> Iterator[None]:
    """Make ``device`` the default for tensors created inside (Pyro's and the model's own),
    except on the CPU, where it already is and torch's device mode would only slow every
    call down."""
    if device.type == "cpu":
        yield
        return
    with device:
        yield


def model_to(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``model`` to ``device`` in place, its priors included, and return it.

    ``Module.to`` moves parameters and buffers, but a ``PyroSample`` prior given as a
    distribution object keeps the tensors it was built with (its ``loc``, its ``scale``),
    as does a distribution held as a plain attribute, such as a likelihood's noise prior,
    and a network held by a prior given as a callable, such as the deep weight prior's
    kernel VAE: those are moved here too (the networks in place).

    Example:
        >>> from pyro_bnn import zoo
        >>> net = model_to(zoo.build("mlp-regression", in_features=1, hidden=(4,)),
        ...                torch.device("meta"))
        >>> net.net[0]._pyro_samples["weight"].base_dist.loc.device
        device(type='meta')
    """
    model.to(device)
    for module in model.modules():
        priors = getattr(module, "_pyro_samples", {})
        for name, prior in list(priors.items()):
            if isinstance(prior, Distribution):
                priors[name] = _moved(prior, device)
            else:  # a lazy prior, such as the deep weight prior's, and the networks it holds
                _move_attributes(prior, device)
        # a likelihood is a plain object on its module: its noise prior is moved here
        for holder in [module, *(v for v in vars(module).values() if isinstance(v, Likelihood))]:
            _move_attributes(holder, device)
    return model


def _move_attributes(holder: object, device: torch.device) -> None:
    """Move the distributions and networks among ``holder``'s attributes to ``device``."""
    for name, value in list(getattr(holder, "__dict__", {}).items()):
        if isinstance(value, (Distribution, torch.nn.Module)):
            setattr(holder, name, _moved(value, device))


def _moved(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it on ``device``: a distribution is copied with its
    tensor attributes (and those of the distributions inside it) moved; a module is moved
    in place."""
    if isinstance(value, (torch.Tensor, torch.nn.Module)):
        return value.to(device)
    if isinstance(value, Distribution):
        moved = copy.copy(value)
        moved.__dict__.update({key: _moved(item, device) for key, item in vars(value).items()})
        return moved
    if type(value) in (list, tuple):
        return type(value)(_moved(item, device) for item in value)
    return value
