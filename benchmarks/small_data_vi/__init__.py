"""``pyro-bnn bench small-data-vi``: its script (``bench.py``) beside its committed records."""

from benchmarks.small_data_vi.bench import main

__all__ = ["main"]
