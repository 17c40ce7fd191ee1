"""``pyro-bnn bench mnist-bbb``: its script (``bench.py``) beside its committed records."""

from benchmarks.mnist_bbb.bench import main

__all__ = ["main"]
