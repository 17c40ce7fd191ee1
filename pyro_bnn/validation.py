"""Checks on data and models that run before any inference, with messages naming the problem.

Example:
    >>> import numpy as np
    >>> as_inputs(np.ones((2, 3))).dtype
    torch.float32
    >>> check_count(0, name="row_batch")
    Traceback (most recent call last):
    ...
    ValueError: row_batch must be a positive integer, got 0
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from pyro_bnn.init import trace_at_support_zero
from pyro_bnn.likelihoods import DATA_PLATE, OBS_SITE

__all__ = [
    "as_inputs",
    "as_targets",
    "check_count",
    "check_inputs_like",
    "check_model",
    "check_seed",
    "latent_site_shapes",
    "left_support",
    "obs_shape_error",
    "short_error",
]

# what a model without a likelihood is told (a bare ``bayesianize``d network)
WRAPPER_HINT = (
    "wrap the network in a PyroModule whose forward(x, y=None) hands its output to a "
    "likelihood, e.g. `return pyro_bnn.likelihoods.Gaussian()(self.net(x).squeeze(-1), y)` "
    "(see the README's quick start)"
)


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, np.ndarray | list | tuple):
        try:
            array = np.asarray(value)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"{name} must be a rectangular array: {error}") from None
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got an array of dtype {array.dtype}")
        tensor = torch.from_numpy(array.copy())
    else:
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}"
        )
    if tensor.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {tensor.dtype}")
    if tensor.dim() > 0 and tensor.shape[0] > 0 and tensor.numel() == 0:
        raise ValueError(f"{name} has no features (shape {tuple(tensor.shape)})")
    if tensor.numel() == 0 or tensor.dim() == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(tensor.shape)}); it needs at least one row"
        )
    return tensor


def _check_finite(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """After conversion: a float64 1e300 is infinite in float32."""
    if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(
            f"{name} contains {bad} NaN or infinite value(s) (in float32, whose largest "
            "value is 3.4e38)"
        )
    return tensor


def as_inputs(x, *, name: str = "x") -> torch.Tensor:
    """Inputs as a finite float32 tensor of shape (rows, ...) with at least 2 dims."""
    tensor = _as_tensor(x, name)
    if tensor.dim() < 2:
        raise ValueError(
            f"{name} must have shape (rows, features), got {tuple(tensor.shape)}; "
            f"reshape a single feature with {name}[:, None]"
        )
    return _check_finite(tensor.to(torch.float32), name)


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
    return _check_finite(tensor.to(torch.float32), name)


def check_count(value, *, name: str) -> int:
    """``value`` as a positive integer, or an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def check_inputs_like(x: torch.Tensor, reference: torch.Tensor, *, name: str = "x") -> None:
    """``x`` must have the per-row shape of the training inputs ``reference``."""
    if x.shape[1:] == reference.shape[1:]:
        return
    if x.dim() == reference.dim() == 2:
        raise ValueError(
            f"{name} has {x.shape[1]} features but the model was fitted on "
            f"{reference.shape[1]} (training x of shape {tuple(reference.shape)})"
        )
    expected = ", ".join(["rows", *map(str, reference.shape[1:])])
    raise ValueError(
        f"{name} has shape {tuple(x.shape)} but the model was fitted on inputs of shape "
        f"({expected})"
    )


def left_support(error: BaseException) -> bool:
    """Whether ``error`` is Pyro's check of a distribution's parameters failing (a
    parameter outside its support), which a fit that diverged raises."""
    return isinstance(error, ValueError) and "Expected parameter" in str(error)


def short_error(error: BaseException) -> str:
    """An exception's message without the trace-shape table Pyro appends to errors raised
    inside a traced model."""
    lines = str(error).splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Trace Shapes:":
            lines = lines[:i]
            break
    return " ".join(line.strip() for line in lines if line.strip())


def obs_shape_error(batch_shape: tuple[int, ...], rows: int, x_shape: tuple[int, ...]) -> str:
    """What to say when the ``obs`` site's batch shape is not the data plate's (rows,)."""
    hints = []
    if len(x_shape) > 2:
        hints.append(f"x has shape {x_shape}: if the model takes (rows, features), give 2-D x")
    if len(batch_shape) >= 2 and batch_shape[-1] == rows:
        hints.append(
            f"a network output of shape ({rows}, 1) or with more trailing dimensions is "
            "broadcast against the data plate: squeeze the output's last dimension "
            "(`f = self.out(h).squeeze(-1)`) before the likelihood"
        )
    message = (
        f"the model's '{OBS_SITE}' site has batch shape {tuple(batch_shape)} but must have "
        f"one value per row of the '{DATA_PLATE}' plate, shape ({rows},)"
    )
    return message + ("; " + "; ".join(hints) if hints else "")


def _model_function(model: Callable) -> Callable:
    return model.forward if isinstance(model, nn.Module) else model


def _check_signature(model: Callable) -> None:
    """The model is called as ``model(x, y)`` by fit and ``model(x, None)`` by predict."""
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    try:
        signature = inspect.signature(_model_function(model))
    except (TypeError, ValueError):  # builtins and C functions: let the call decide
        return
    try:
        signature.bind(None, None)
    except TypeError:
        if isinstance(model, nn.Sequential):
            raise TypeError(
                "model is a bare network (nn.Sequential) with no likelihood, so it cannot "
                f"observe y; {WRAPPER_HINT}"
            ) from None
        raise TypeError(
            f"model must be called as model(x, y=None) and observe y; its forward takes {signature}"
        ) from None


@contextmanager
def _first_layer_inputs() -> Iterator[list[tuple[str, nn.Module, tuple[int, ...]]]]:
    """Record (name, layer, input shape) of every Linear or Conv2d called inside."""
    calls: list[tuple[str, nn.Module, tuple[int, ...]]] = []

    def hook(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            name = getattr(module, "_pyro_name", "") or type(module).__name__
            calls.append((name, module, tuple(args[0].shape)))

    handle = nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: (
            hook(module, args) if isinstance(module, nn.Linear | nn.Conv2d) else None
        )
    )
    try:
        yield calls
    finally:
        handle.remove()


def _layer_mismatch(calls: list, x: torch.Tensor) -> str | None:
    """The first layer whose input width is not what it expects, in the user's terms."""
    for name, layer, shape in calls:
        expected = getattr(layer, "in_features", None) or getattr(layer, "in_channels", None)
        got = (
            shape[-1] if isinstance(layer, nn.Linear) else (shape[-3] if len(shape) >= 3 else None)
        )
        if expected is not None and got is not None and got != expected:
            what = "features" if isinstance(layer, nn.Linear) else "channels"
            if name == calls[0][0]:
                return (
                    f"x has {got} {what} but the model's first layer '{name}' expects "
                    f"{expected} (x has shape {tuple(x.shape)})"
                )
            return f"layer '{name}' got {got} {what} but expects {expected}"
    return None


def check_model(model: Callable, x: torch.Tensor, y: torch.Tensor) -> None:
    """Run ``model(x, y)`` once and check the contract: it takes ``(x, y)``, runs on ``x``,
    and observes ``y`` at ``obs`` inside the ``data`` plate, one value per row, within the
    observed distribution's support."""
    _check_signature(model)
    expected = getattr(model, "in_features", None)
    if isinstance(expected, int) and not isinstance(expected, bool):
        if x.dim() != 2:
            raise ValueError(
                f"x must have shape (rows, {expected}) for this model, got {tuple(x.shape)}"
            )
        if x.shape[1] != expected:
            raise ValueError(f"x has {x.shape[1]} features but the model expects {expected}")
    with _first_layer_inputs() as calls:
        try:
            trace = trace_at_support_zero(model, x, y)  # the prior may be improper
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            found = _layer_mismatch(calls, x)
            if found is not None:
                raise ValueError(found) from None
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(
                f"the model failed on x of shape {tuple(x.shape)} and y of shape "
                f"{tuple(y.shape)}: {short_error(error)}"
            ) from error
    node = trace.nodes.get(OBS_SITE)
    if node is None or node["type"] != "sample":
        raise ValueError(
            f"the model has no '{OBS_SITE}' sample site; observe y with "
            f"pyro.sample('{OBS_SITE}', ..., obs=y) inside pyro.plate('{DATA_PLATE}', ...)"
        )
    if not node["is_observed"]:
        raise ValueError(f"the model's '{OBS_SITE}' site ignores y; pass obs=y to it")
    plates = [frame for frame in node["cond_indep_stack"] if frame.name == DATA_PLATE]
    if not plates:
        raise ValueError(
            f"the model's '{OBS_SITE}' site must sit inside pyro.plate('{DATA_PLATE}')"
        )
    fn, rows = node["fn"], plates[0].size
    if tuple(fn.batch_shape) != (rows,) or tuple(fn.event_shape) != ():
        raise ValueError(obs_shape_error(tuple(fn.batch_shape + fn.event_shape), rows,
                                         tuple(x.shape)))  # fmt: skip
    _check_support(fn, node["value"])


def _check_support(fn, value: torch.Tensor) -> None:
    """y within the support of the observed distribution (class labels in range)."""
    try:
        inside = fn.support.check(value)
    except (NotImplementedError, RuntimeError):
        return
    if bool(inside.all()):
        return
    rows = torch.nonzero(~inside).flatten()[:5].tolist()
    values = value[~inside][:5].tolist()
    support = fn.support
    lower, upper = getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)
    if lower is not None and upper is not None and not torch.is_floating_point(value):
        bounds = f"labels {values} (rows {rows}) are outside {lower}..{upper}"
    else:
        bounds = f"values {values} (rows {rows}) are outside the support {support}"
    raise ValueError(f"y does not fit the model's '{OBS_SITE}' distribution: {bounds}")


def check_seed(seed) -> None:
    """``seed`` must be None or a non-negative integer."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def latent_site_shapes(model: Callable, x: torch.Tensor, y: torch.Tensor) -> dict[str, tuple]:
    """The name and shape of every latent (unobserved) sample site of ``model(x, y)``."""
    from pyro.poutine.util import site_is_subsample

    trace = trace_at_support_zero(model, x, y)
    return {
        name: tuple(node["value"].shape)
        for name, node in trace.nodes.items()
        if node["type"] == "sample" and not node["is_observed"] and not site_is_subsample(node)
    }
