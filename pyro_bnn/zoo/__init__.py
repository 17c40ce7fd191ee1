"""The model zoo: named Bayesian networks, one module per model, some with a model card.

The zoo is the explicit table :data:`ENTRIES` below: zoo name -> the module defining the
model, the builder in it (a class or a function taking keyword arguments) and a summary.
A model module is imported only when its model is built, and model modules never import
this table, so there is no registration by import and no import circle. A card is a
markdown file beside its module (``uci_mlp.md`` beside ``uci_mlp.py``), read by
:func:`card`.

Example:
    >>> from pyro_bnn import zoo
    >>> "mlp-regression" in zoo.names()
    True
    >>> model = zoo.build("mlp-regression", in_features=3)
    >>> zoo.card("uci-mlp").splitlines()[0]
    '# Model card: `uci-mlp`, the UCI regression benchmark'
"""

from __future__ import annotations

import importlib
import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ENTRIES", "ZooEntry", "build", "card", "entries", "entry", "names"]


@dataclass(frozen=True, kw_only=True)
class ZooEntry:
    """One zoo model: ``builder`` is the attribute ``attribute`` of module ``module``
    (imported on first use); ``card`` the file name of its card beside that module."""

    name: str
    module: str
    attribute: str
    summary: str
    card: str | None = None

    @property
    def builder(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.attribute)


def _entry(name: str, module: str, attribute: str, summary: str, **card: str) -> ZooEntry:
    return ZooEntry(name=name, module=f"{__name__}.{module}", attribute=attribute,
                    summary=summary, **card)  # fmt: skip


ENTRIES: tuple[ZooEntry, ...] = (
    _entry("bayesian-linear-regression", "bayesian_linear_regression",
           "BayesianLinearRegression", "conjugate Bayesian linear regression"),
    _entry("bbb-mlp", "bbb_mlp", "bbb_mlp",
           "Bayes by Backprop MLP: 2 hidden ReLU layers of 1200, categorical"),
    _entry("dwp-cnn", "dwp_cnn", "DWPCNN",
           "Atanov et al. CNN (conv 7x7, 5x5) under the deep weight prior", card="dwp_cnn.md"),
    _entry("gaussian-mixture-25", "mixture25", "MixtureOf25",
           "2-D mixture of 25 Gaussians (Zhang et al. 2020): a multimodal sampling target"),
    _entry("mlp-classification", "mlp_classification", "MLPClassification",
           "Bayesian MLP classifier (categorical or Bernoulli)"),
    _entry("mlp-heteroscedastic", "mlp_heteroscedastic", "MLPHeteroscedastic",
           "Bayesian MLP with mean and noise-scale heads (heteroscedastic Gaussian)"),
    _entry("mlp-regression", "mlp_regression", "MLPRegression",
           "Bayesian MLP, Gaussian likelihood (fixed or learned noise)"),
    _entry("uci-mlp", "uci_mlp", "uci_mlp",
           "UCI benchmark MLP: fan-in Gaussian prior, Gamma prior on noise", card="uci_mlp.md"),
)  # fmt: skip
_BY_NAME = {e.name: e for e in ENTRIES}


def entries() -> list[ZooEntry]:
    """Every zoo model, sorted by name."""
    return [_BY_NAME[name] for name in sorted(_BY_NAME)]


def names() -> list[str]:
    return sorted(_BY_NAME)


def entry(name: str) -> ZooEntry:
    """The zoo entry ``name``, or an error listing the known names."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(names())}")
    return _BY_NAME[name]


def build(name: str, **kwargs: Any) -> Any:
    """Build the zoo model ``name``; keyword arguments go to its constructor. The model
    remembers both as ``zoo_spec``, so a saved posterior of it can rebuild it
    (:mod:`pyro_bnn.io`)."""
    model = entry(name).builder(**kwargs)
    try:
        model.zoo_spec = {"name": name, "kwargs": dict(kwargs)}
    except AttributeError:  # a builder that returns an object without attributes
        pass
    return model


def card(name: str) -> str:
    """The markdown text of model ``name``'s card (shipped beside its module)."""
    found = entry(name)
    if found.card is None:
        with_cards = [e.name for e in entries() if e.card is not None]
        raise ValueError(f"zoo model {name!r} has no card; models with one: {with_cards}")
    return importlib.resources.files(__name__).joinpath(found.card).read_text(encoding="utf-8")
