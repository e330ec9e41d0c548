"""Moved to :mod:`kd_lightning.callbacks.throughput` (callbacks live together); kept for ``scripts/benchmark.py``."""

from kd_lightning.callbacks.throughput import EpochThroughput, median_after_first

__all__ = ["EpochThroughput", "median_after_first"]
