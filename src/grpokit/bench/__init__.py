"""Benchmarks run by ``grpokit bench``: throughput and the preference-group comparison."""
