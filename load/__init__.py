"""Benchmarks: each `load/bench_*.py` script prints a table of ratios measured side by side in one
run (Facet vs what a user would pick instead). What they share lives in `load/harness.py`."""
