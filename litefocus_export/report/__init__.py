"""Latency comparison reports: duration x backend x attention, with medians, stage breakdown, FLOPs, plots.

``run_report(ReportSettings(out=...))`` is what ``litefocus-export report`` runs. Each configuration is
measured in its own process (``measure.py``); ``report.json`` (schema_version 1), ``report.md`` and the
PNG plots are rewritten after every configuration from the same data.
"""

from .matrix import run_report
from .settings import ReportSettings, parse_list

__all__ = ["ReportSettings", "parse_list", "run_report"]
