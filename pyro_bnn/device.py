"""Where a fit runs: a torch device, checked, and the context that places new tensors on it.

Example:
    >>> from pyro_bnn.device import as_device
    >>> as_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["as_device", "placed"]


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
