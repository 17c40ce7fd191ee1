"""The README's setup/test commands and CI agree, and its quick-start code runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", README, flags=re.S)]


def test_readme_opens_with_demo_and_test_commands():
    demo, test = _bash_blocks()[:2]
    assert demo.startswith("python3 -m venv .venv && .venv/bin/pip install torch==2.13.0")
    assert demo.endswith("pyro-bnn demo")
    assert test.endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()


def test_quick_start_runs(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)  # it saves posteriors in the working directory

    code = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    plt.close("all")


@pytest.mark.slow
def test_quick_start_runs_as_a_script(tmp_path):
    """Pasted into a file and run with ``python script.py``: the script has no
    ``if __name__ == "__main__":`` guard, so NUTS's two chains run in this process with a
    one-line warning instead of dying in spawned workers (9.8 min on the 2-core development
    machine with two benchmarks sharing its cores, 2026-11-27)."""
    code = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    script = tmp_path / "script.py"
    script.write_text(code)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "running the chains one after another here" in done.stderr
    assert "worker process died" not in done.stderr
