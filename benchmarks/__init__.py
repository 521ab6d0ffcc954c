"""Throughput and scaling benchmarks (scripts, not tests)."""
