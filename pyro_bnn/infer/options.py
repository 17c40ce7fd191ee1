"""Keyword-only option sets of the inference methods, with their checks.

Every method's options derive from :class:`Options`, which holds what the chain runner
needs (``num_chains``, ``chain_processes``) and checks each field against its annotated
type: an integer count must be an integer, a float finite, a flag a bool.

Example:
    >>> Options(num_chains=2).chains
    2
    >>> Options(num_chains=2.5)
    Traceback (most recent call last):
    ...
    TypeError: option num_chains must be an integer, got 2.5
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

__all__ = ["Options", "parse_options"]


@cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _allowed(annotation: Any) -> tuple[Any, ...]:
    """The plain types a field annotated ``annotation`` accepts (``int | None`` -> int, None)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed(arg))
    return (annotation,)


def _check_type(name: str, value: Any, annotation: Any) -> None:
    allowed = _allowed(annotation)
    if isinstance(value, str) and str in allowed:
        return
    if value is None:
        if type(None) not in allowed:
            raise TypeError(f"option {name} must not be None")
        return
    if bool in allowed:
        if not isinstance(value, bool):
            raise TypeError(f"option {name} must be True or False, got {value!r}")
    elif int in allowed and float not in allowed:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"option {name} must be an integer, got {value!r}")
    elif float in allowed:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"option {name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"option {name} must be finite, got {value!r}")
    elif str in allowed and not isinstance(value, str):
        raise TypeError(f"option {name} must be a string, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Options:
    """Base class of every method's options.

    ``num_chains`` independent runs, each decided by its own seed, in ``chain_processes``
    spawned workers (default: one per chain up to the machine's cores; 1 runs them here,
    one after another). Every field is checked against its type; positive numbers must be
    positive unless :meth:`allow_zero` names them.
    """

    num_chains: int = 1
    chain_processes: int | None = None

    def __post_init__(self) -> None:
        hints = _field_types(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, hints[f.name])
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | float) and f.name not in self.allow_zero() and value <= 0:
                raise ValueError(f"option {f.name} must be positive, got {value}")

    @property
    def chains(self) -> int:
        """How many chains the runner starts."""
        return self.num_chains

    @classmethod
    def allow_zero(cls) -> frozenset[str]:
        return frozenset()

    def check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        """An error naming option ``name`` and its ``choices`` if its value is not one."""
        value = getattr(self, name)
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
            raise ValueError(f"{name} must be {listed}, got {value!r}")


def parse_options(cls: type[Options], method: str, options: dict[str, Any]) -> Options:
    """Build ``cls(**options)``, naming options that ``method`` does not use and the valid ones."""
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"method {method!r} does not use option(s) {', '.join(unknown)}; "
            f"its options: {', '.join(sorted(valid))}"
        )
    return cls(**options)
