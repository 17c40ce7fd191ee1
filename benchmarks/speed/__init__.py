"""``pyro-bnn bench speed``: its script (``bench.py``) beside its committed records."""
