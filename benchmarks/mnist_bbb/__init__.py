"""``pyro-bnn bench mnist-bbb``: its script (``bench.py``) beside its committed records."""
