"""``pyro-bnn bench <name>`` runs ``benchmarks/<name>`` of the checkout holding the current
directory, and says so when there is none; ``python -m benchmarks.<name>`` works too."""

import subprocess
import sys
from pathlib import Path

from pyro_bnn.cli import find_checkout, main

ROOT = Path(__file__).resolve().parents[2]


def test_the_checkout_is_found_from_any_folder_inside_it(tmp_path):
    assert find_checkout(ROOT / "benchmarks" / "uci") == ROOT
    assert find_checkout(tmp_path) is None


def test_outside_a_checkout_the_command_says_where_benches_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "modes", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "benches run from a checkout of pyro-bnn" in err and str(tmp_path) in err


def test_an_unknown_bench_lists_the_benches(monkeypatch, capsys):
    monkeypatch.chdir(ROOT / "tests")
    assert main(["bench", "warp"]) == 2
    err = capsys.readouterr().err
    assert "unknown bench 'warp'" in err
    assert "has distributed, dwp, mnist-bbb, modes, small-data-vi, speed, uci" in err


def test_python_m_runs_a_bench_from_the_root():
    done = subprocess.run([sys.executable, "-m", "benchmarks.modes", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: pyro-bnn bench modes")
