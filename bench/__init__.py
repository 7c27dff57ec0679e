"""Benchmarks and the load generator: ``python -m bench`` writes one report under ``bench/results/``."""
