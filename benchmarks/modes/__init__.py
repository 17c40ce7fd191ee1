"""``pyro-bnn bench modes``: its script (``bench.py``) beside its committed records."""

from benchmarks.modes.bench import main

__all__ = ["main"]
