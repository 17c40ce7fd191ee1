"""``pyro-bnn bench uci``: its script (``bench.py``) beside its committed records."""

from benchmarks.uci.bench import main

__all__ = ["main"]
