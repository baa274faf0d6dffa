"""Benchmarks: the side-by-side throughput harness and pytest-benchmark micro-benchmarks."""
