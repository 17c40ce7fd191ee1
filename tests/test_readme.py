"""The README's setup/test commands and CI agree, and its quick-start code runs."""

import re
from pathlib import Path

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


def test_quick_start_runs():
    import matplotlib.pyplot as plt

    code = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    plt.close("all")
