"""The model zoo: named Bayesian networks from the top-level ``models`` package.

Models register themselves with :func:`register` when ``models`` is imported; the list
of zoo modules is explicit in ``models/__init__.py``.

Example:
    >>> from pyro_bnn import zoo
    >>> "mlp-regression" in zoo.names()
    True
    >>> model = zoo.build("mlp-regression", in_features=3)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from pyro.nn import PyroModule

__all__ = ["ZooEntry", "build", "entries", "names", "register"]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    builder: Callable[..., PyroModule]
    summary: str


_REGISTRY: dict[str, ZooEntry] = {}


def register(name: str, *, summary: str) -> Callable[[Callable[..., PyroModule]], Callable]:
    """Class or function decorator adding a model builder to the zoo under ``name``."""

    def decorate(builder: Callable[..., PyroModule]) -> Callable[..., PyroModule]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"zoo name {name!r} is already registered")
        _REGISTRY[name] = ZooEntry(name=name, builder=builder, summary=summary)
        return builder

    return decorate


def _load() -> None:
    importlib.import_module("models")


def entries() -> list[ZooEntry]:
    """Every registered model, sorted by name."""
    _load()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def names() -> list[str]:
    return [entry.name for entry in entries()]


def build(name: str, **kwargs) -> PyroModule:
    """Build the zoo model ``name``; keyword arguments go to its constructor."""
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name].builder(**kwargs)
