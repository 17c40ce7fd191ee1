"""The harness every bench runs on: settings, resumable records, the machine, markdown.

- **Settings**: a bench's configuration is a frozen, keyword-only dataclass deriving from
  :class:`Settings`; ``tiny(**overrides)`` gives its smoke-test settings and ``record()``
  the JSON stored with the results.
- **Records**: :func:`load_records` reads a bench's results document, or starts a fresh
  one, so that a rerun resumes; :func:`same_settings` refuses to mix results measured
  with other settings; :func:`save` writes the document atomically (``pyro_bnn.files``)
  and its markdown report beside it.
- :func:`machine`: the one description of the machine that every record stores.
- **Markdown**: :func:`table_header` and :func:`table_row`.
- **Command line**: :func:`command` builds a bench's parser with the options every bench
  shares; :func:`main` runs it, reporting bad input as one line and exit status 2.

Example:
    >>> table_header("method", "error")
    ['| method | error |', '|---|---|']
    >>> table_row("sgd", "1.88 %")
    '| sgd | 1.88 % |'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from pyro_bnn.files import atomic_open, read_json, write_json

__all__ = [
    "Settings",
    "command",
    "load_records",
    "machine",
    "main",
    "names",
    "same_settings",
    "save",
    "table_header",
    "table_row",
]

S = TypeVar("S", bound="Settings")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Base of every bench's configuration (subclasses add the fields)."""

    @classmethod
    def tiny_settings(cls) -> dict[str, Any]:
        """The fields :meth:`tiny` changes: seconds per run, the same code path."""
        return {}

    @classmethod
    def tiny(cls: type[S], **overrides: Any) -> S:
        """Smoke-test settings (figures are not meaningful), with ``overrides``."""
        return cls(**{**cls.tiny_settings(), **overrides})

    def record(self) -> dict[str, Any]:
        """Every field as JSON (tuples become lists), as stored with the results."""
        return json.loads(json.dumps(asdict(self), default=str))


def machine() -> str:
    """Architecture, cores, torch threads, system, Python and torch versions."""
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
        f"threads, {platform.system()}, {platform.python_implementation()} "
        f"{platform.python_version()}, torch {torch.__version__}"
    )


def load_records(path: Path, *, fresh: dict[str, Any], bench: str) -> dict[str, Any]:
    """The results document at ``path``, for a rerun to resume from, or ``fresh`` when
    there is none. A file that is not JSON, or lacks one of the lists ``fresh`` holds, is
    refused (and left where it is): it was not written by this bench."""
    document = read_json(path)
    if document is None:
        return fresh
    lists = [key for key, value in fresh.items() if isinstance(value, list)]
    missing = [key for key in lists if not isinstance(document, dict)
               or not isinstance(document.get(key), list)]  # fmt: skip
    if missing:
        raise ValueError(
            f"{path} has no {' or '.join(map(repr, missing))} list; "
            f"it was not written by bench {bench}"
        )
    return document


def same_settings(
    stored: Mapping[str, Any], now: Mapping[str, Any], *, path: Path, what: str
) -> None:
    """An error naming the settings that differ when ``what`` in ``path`` was measured
    with settings other than ``now``: results of two settings are never mixed."""
    changed = sorted(k for k in set(now) | set(stored) if stored.get(k) != now.get(k))
    if changed:
        raise ValueError(
            f"{path} holds {what} measured with other settings ({', '.join(changed)}); "
            "use another --out directory"
        )


def save(out: Path, document: Any, report: str, *, name: str = "results") -> None:
    """``out/<name>.json`` and its report ``out/<name>.md``, each written atomically."""
    write_json(out / f"{name}.json", document)
    with atomic_open(out / f"{name}.md") as f:
        f.write(report)


def table_header(*columns: str) -> list[str]:
    """A markdown table's header row and its separator."""
    return [table_row(*columns), "|" + "---|" * len(columns)]


def table_row(*cells: object) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def names(text: str) -> list[str]:
    """A comma-separated option as a list: ``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def command(
    name: str, description: str, *, data: str | None = None, quick: bool = True
) -> argparse.ArgumentParser:
    """The parser of ``pyro-bnn bench <name>``, with the options every bench shares:
    ``--out`` (default ``bench-output/<name>``), ``--data-dir`` when the bench reads
    ``data`` (the folders it needs), ``--quick`` and ``--no-progress``."""
    parser = argparse.ArgumentParser(prog=f"pyro-bnn bench {name}", description=description)
    parser.add_argument("--out", default=f"bench-output/{name}", help="output directory")
    if data is not None:
        parser.add_argument(
            "--data-dir",
            default=None,
            help=f"folder holding {data} (default: $PYRO_BNN_DATA or ../shared/data)",
        )
    if quick:
        parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv`` and run; bad input (a ValueError or a missing file) is reported in
    one line naming the problem, with exit status 2 and no traceback."""
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
