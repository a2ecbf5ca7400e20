"""Benchmarks of the stack: `python -m bench` (or `make bench`) runs them all."""
