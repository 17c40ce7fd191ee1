"""Files written so that an interruption never leaves a half-written one.

:func:`atomic_open` writes to a temporary file beside the target and renames it over the
target only once the write has finished; a failed or interrupted write leaves the old file
as it was. :func:`read_json` / :func:`write_json` keep JSON documents atomically (the
benches' results among them).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.json"
    >>> write_json(path, {"records": []})
    >>> read_json(path)
    {'records': []}
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "read_json", "write_json"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces ``path`` (``os.replace``
    is atomic), on an error it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(mode, dir=path.parent, suffix=".tmp", delete=False)
    try:
        with tmp:
            yield tmp
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp.name)
        raise


def write_json(path: str | os.PathLike, document: Any) -> None:
    """``document`` as indented JSON at ``path``, atomically."""
    with atomic_open(path) as f:
        json.dump(document, f, indent=1)


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON at ``path``, None if there is no file, or an error naming a file that is
    not valid JSON (left where it is)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); move it away to start afresh"
        ) from None
