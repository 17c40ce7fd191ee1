"""Keyword-only option sets shared by the inference methods, with their checks."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Options", "parse_options"]


@dataclass(frozen=True, kw_only=True)
class Options:
    """Base class: positive integer and float fields are checked after construction."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | float) and f.name not in self.allow_zero() and value <= 0:
                raise ValueError(f"option {f.name} must be positive, got {value}")

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
    """Build ``cls(**options)``, naming unknown options and the valid ones."""
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for method {method!r}; "
            f"valid options: {', '.join(sorted(valid))}"
        )
    return cls(**options)
