"""The experiments behind the README's and the model cards' figures, kept outside the
library: one folder per bench holding its script beside its committed records and report,
all on one small harness (:mod:`benchmarks.harness`). Run from a checkout of pyro-bnn:
``pyro-bnn bench <name> …`` or ``python -m benchmarks.<name> …``."""
