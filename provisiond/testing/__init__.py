"""Helpers for tests, demos and benchmarks: real conda packages and channels built locally."""
