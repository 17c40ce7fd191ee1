"""``pyro-bnn bench dwp``: its script (``bench.py``) beside its committed records."""

from benchmarks.dwp.bench import main

__all__ = ["main"]
