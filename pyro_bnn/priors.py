"""Priors over network parameters: one hook, selectors, and the prior families.

A prior is any callable ``prior(name, module, parameter) -> Distribution | None``.
``name`` is the parameter's qualified name in the network (``"0.weight"``), ``module``
the module that owns it and ``parameter`` its current value (for shapes, dtype and
fan-in). Returning ``None`` keeps the parameter deterministic.

Example:
    >>> import torch
    >>> prior = GaussianPrior(scale=1.0, layer_scales={"2": 0.1})
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    >>> prior("2.weight", net[2], net[2].weight).base_dist.scale.unique().item()
    0.1...
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pyro.distributions as dist
import torch
from torch import nn

__all__ = [
    "FanInGaussianPrior",
    "GaussianPrior",
    "Prior",
    "PriorHook",
    "Selector",
    "fan_in",
]

PriorHook = Callable[[str, nn.Module, torch.Tensor], "dist.Distribution | None"]


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


@dataclass(frozen=True, kw_only=True)
class Selector:
    """Which parameters are Bayesian.

    Patterns are shell-style (``fnmatch``) patterns. ``modules`` match the owning module's
    qualified name (``""`` is the root), ``parameters`` the parameter's own name
    (``"weight"``, ``"bias"``). ``module_types`` restricts to module classes. A parameter
    is selected when it passes every include rule and no ``hide_*`` rule.

    Example:
        >>> Selector(hide_modules=("head",)).selects("head.weight", torch.nn.Linear(1, 1))
        False
    """

    modules: tuple[str, ...] = ("*",)
    parameters: tuple[str, ...] = ("*",)
    module_types: tuple[type[nn.Module], ...] = (nn.Module,)
    hide_modules: tuple[str, ...] = ()
    hide_parameters: tuple[str, ...] = ()

    def selects(self, name: str, module: nn.Module) -> bool:
        module_name, _, parameter_name = name.rpartition(".")
        return (
            isinstance(module, self.module_types)
            and _matches(module_name, self.modules)
            and _matches(parameter_name, self.parameters)
            and not _matches(module_name, self.hide_modules)
            and not _matches(parameter_name, self.hide_parameters)
        )


def fan_in(module: nn.Module, parameter: torch.Tensor) -> int:
    """Number of inputs feeding one output unit (in_features, or in_channels × kernel)."""
    weight = getattr(module, "weight", parameter)
    if weight.dim() < 2:
        return max(int(weight.shape[0]), 1)
    return int(weight[0].numel())


@dataclass(frozen=True, kw_only=True)
class Prior:
    """Base class: a selector plus a per-parameter scale; subclasses choose the scale."""

    select: Selector = field(default_factory=Selector)

    def scale_for(self, name: str, module: nn.Module, parameter: torch.Tensor) -> float:
        raise NotImplementedError

    def __call__(
        self, name: str, module: nn.Module, parameter: torch.Tensor
    ) -> dist.Distribution | None:
        if not self.select.selects(name, module):
            return None
        scale = self.scale_for(name, module, parameter)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"prior scale for {name!r} must be positive and finite, got {scale}")
        zeros = torch.zeros((), dtype=parameter.dtype, device=parameter.device)
        return dist.Normal(zeros, zeros + scale).expand(parameter.shape).to_event(parameter.dim())


def _layer_override(name: str, overrides: Mapping[str, float]) -> float | None:
    module_name = name.rpartition(".")[0]
    for pattern, value in overrides.items():
        if fnmatch.fnmatchcase(module_name, pattern) or fnmatch.fnmatchcase(name, pattern):
            return float(value)
    return None


@dataclass(frozen=True, kw_only=True)
class GaussianPrior(Prior):
    """Isotropic N(0, σ²) on every selected parameter.

    ``scale`` is σ; ``layer_scales`` maps module-name (or parameter-name) patterns to a
    per-layer σ that overrides it. At the MAP this is an L2 penalty ‖w‖²/(2σ²) added to the
    negative log-likelihood: ridge with λ = σ_n²/σ² relative to the squared error Σ(y−f)²/2,
    or PyTorch ``weight_decay`` = 2σ_n²/(Nσ²) with a mean-reduced MSE loss (see README).
    """

    scale: float = 1.0
    layer_scales: Mapping[str, float] = field(default_factory=dict)

    def scale_for(self, name: str, module: nn.Module, parameter: torch.Tensor) -> float:
        override = _layer_override(name, self.layer_scales)
        return self.scale if override is None else override


@dataclass(frozen=True, kw_only=True)
class FanInGaussianPrior(Prior):
    """N(0, c²/fan_in): the scale shrinks with the number of inputs to a unit.

    Biases use the fan-in of their layer's weight, so ``c`` means the same for both.
    """

    c: float = 1.0
    layer_c: Mapping[str, float] = field(default_factory=dict)

    def scale_for(self, name: str, module: nn.Module, parameter: torch.Tensor) -> float:
        override = _layer_override(name, self.layer_c)
        c = self.c if override is None else override
        return c / math.sqrt(fan_in(module, parameter))
