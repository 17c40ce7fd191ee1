"""``pyro-bnn bench uci``: its script (``bench.py``) beside its committed records."""
