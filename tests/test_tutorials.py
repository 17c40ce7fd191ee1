"""Execute every notebook in ``tutorials/`` in its small setting (``PYRO_BNN_SMOKE=1``).

Run with the project's interpreter (``.venv/bin/python -m pytest``): the ``python3`` kernel
is started with that same interpreter.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_tutorial_executes(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRO_BNN_SMOKE", "1")  # the kernel inherits os.environ at start
    km = KernelManager(kernel_name="python3")
    kernel_python = km.format_kernel_cmd()[0]
    if not _same_file(kernel_python, sys.executable):
        pytest.fail(
            f"kernel 'python3' would run {kernel_python}, not this interpreter "
            f"{sys.executable}; run pytest with the project's virtual environment",
            pytrace=False,
        )
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        km=km,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(TUTORIALS)}},
    )
    failure = None
    try:
        client.execute()
    except CellExecutionError as error:
        failure = ANSI_ESCAPE.sub("", str(error))
    if failure is not None:
        pytest.fail(f"{path.name}: a cell failed\n{failure}", pytrace=False)
