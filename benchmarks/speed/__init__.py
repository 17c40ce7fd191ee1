"""``pyro-bnn bench speed``: its script (``bench.py``) beside its committed records."""

from benchmarks.speed.bench import main

__all__ = ["main"]
