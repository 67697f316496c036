"""Benchmarks: speed ratios measured within one run, saved to data/results/bench_*.json."""
