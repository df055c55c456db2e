"""Reports: a period's figures of many checks (uptime, downtime, incidents, MTTR, MTBF,
Apdex, p95 latency, SLO state), computed from the rollup tiers (`compute.py`), rendered
as JSON, CSV, HTML or PDF (`render.py`), built in the background by `ReportBuilder`
(`builder.py`). docs/reports.md describes them."""

from __future__ import annotations

from tocsin.reports.builder import ReportBuilder
from tocsin.reports.compute import FORMATS, MAX_PERIOD_S, Period

__all__ = ["FORMATS", "MAX_PERIOD_S", "Period", "ReportBuilder"]
