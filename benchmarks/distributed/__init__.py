"""``pyro-bnn bench distributed``: data-parallel SVI steps per second, one process against
several (:mod:`benchmarks.distributed.bench`)."""

from benchmarks.distributed.bench import DistributedConfig, format_markdown, main, run_scaling

__all__ = ["DistributedConfig", "format_markdown", "main", "run_scaling"]
