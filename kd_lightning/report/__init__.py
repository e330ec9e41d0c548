"""Turning run outputs into tables."""

from kd_lightning.report.hydra_callback import SummaryTable
from kd_lightning.report.table import markdown_table, read_summaries
from kd_lightning.report.throughput import EpochThroughput

__all__ = ["EpochThroughput", "SummaryTable", "markdown_table", "read_summaries"]
