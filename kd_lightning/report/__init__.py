"""Turning run outputs into tables."""

from kd_lightning.report.hydra_callback import SummaryTable
from kd_lightning.report.table import markdown_table, read_summaries

__all__ = ["SummaryTable", "markdown_table", "read_summaries"]
