"""``pyro-bnn bench modes``: its script (``bench.py``) beside its committed records."""
