"""Benchmarks that write the figures the README and model cards quote."""
