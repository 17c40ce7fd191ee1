"""Importing pyro_bnn: fast, quiet, without ArviZ or matplotlib (imported when used)."""

import subprocess
import sys

CODE = "import sys, pyro_bnn; print(sorted({'arviz', 'matplotlib', 'scipy'} & set(sys.modules)))"


def test_import_leaves_arviz_and_matplotlib_for_later():
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", CODE], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
    assert "FutureWarning" not in done.stderr and done.stderr == ""


def test_arviz_arrives_without_its_future_warning():
    code = "import pyro_bnn.diagnostics as d; d.import_arviz()"
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True
    )
    assert "FutureWarning" not in done.stderr
