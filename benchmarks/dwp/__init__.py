"""``pyro-bnn bench dwp``: its script (``bench.py``) beside its committed records."""
