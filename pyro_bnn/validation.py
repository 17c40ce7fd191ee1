"""Checks on data and models that run before any inference, with messages naming the problem.

Example:
    >>> import numpy as np
    >>> as_inputs(np.ones((2, 3))).dtype
    torch.float32
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pyro_bnn.init import trace_at_support_zero
from pyro_bnn.likelihoods import DATA_PLATE, OBS_SITE

__all__ = ["as_inputs", "as_targets", "check_model", "check_seed"]


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, np.ndarray | list | tuple):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got an array of dtype {array.dtype}")
        tensor = torch.from_numpy(array.copy())
    else:
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}"
        )
    if tensor.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {tensor.dtype}")
    if tensor.numel() == 0 or tensor.dim() == 0 or tensor.shape[0] == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(tensor.shape)}); fit needs at least one row"
        )
    if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return tensor


def as_inputs(x, *, name: str = "x") -> torch.Tensor:
    """Inputs as a float32 tensor of shape (rows, ...) with at least 2 dims."""
    tensor = _as_tensor(x, name)
    if tensor.dim() < 2:
        raise ValueError(
            f"{name} must have shape (rows, features), got {tuple(tensor.shape)}; "
            f"reshape a single feature with {name}[:, None]"
        )
    return tensor.to(torch.float32)


def as_targets(y, *, rows: int, name: str = "y") -> torch.Tensor:
    """Targets as a 1-D tensor of ``rows`` entries: float32, or int64 for integer labels."""
    tensor = _as_tensor(y, name)
    if tensor.dim() == 2 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be 1-D (rows,), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] != rows:
        raise ValueError(f"x has {rows} rows but {name} has {tensor.shape[0]}: lengths differ")
    if tensor.dtype == torch.bool or not torch.is_floating_point(tensor):
        return tensor.long()
    return tensor.to(torch.float32)


def check_model(model: Callable, x: torch.Tensor, y: torch.Tensor) -> None:
    """Run ``model(x, y)`` once and check the contract: it runs and observes ``obs`` in ``data``."""
    expected = getattr(model, "in_features", None)
    if expected is not None and x.dim() == 2 and x.shape[1] != expected:
        raise ValueError(f"x has {x.shape[1]} features but the model expects {expected}")
    try:
        trace = trace_at_support_zero(model, x, y)  # the prior may be improper
    except RuntimeError as error:
        raise ValueError(
            f"the model failed on x of shape {tuple(x.shape)} (wrong number of features?): {error}"
        ) from error
    node = trace.nodes.get(OBS_SITE)
    if node is None or node["type"] != "sample":
        raise ValueError(
            f"the model has no '{OBS_SITE}' sample site; observe y with "
            f"pyro.sample('{OBS_SITE}', ..., obs=y) inside pyro.plate('{DATA_PLATE}', ...)"
        )
    if not node["is_observed"]:
        raise ValueError(f"the model's '{OBS_SITE}' site ignores y; pass obs=y to it")
    if not any(frame.name == DATA_PLATE for frame in node["cond_indep_stack"]):
        raise ValueError(
            f"the model's '{OBS_SITE}' site must sit inside pyro.plate('{DATA_PLATE}')"
        )


def check_seed(seed) -> None:
    """``seed`` must be None or a non-negative integer."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
