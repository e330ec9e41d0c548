"""Turning run outputs into tables, figures and logged hyperparameters."""

from kd_lightning.report.facts import run_config
from kd_lightning.report.hydra_callback import SummaryTable
from kd_lightning.report.table import markdown_table, read_summaries, table_rows
from kd_lightning.callbacks.throughput import EpochThroughput  # a callback; imported here for older code

__all__ = ["EpochThroughput", "SummaryTable", "markdown_table", "read_summaries", "run_config", "table_rows"]
