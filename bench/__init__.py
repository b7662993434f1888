"""Benchmarks, each printing its figures and the ratio to a baseline."""
