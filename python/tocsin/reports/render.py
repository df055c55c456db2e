"""A report's content as a document: JSON, CSV (one row per check, with a header),
standalone HTML (Jinja2, autoescaped, inline CSS) and PDF (that HTML, by WeasyPrint)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import jinja2

CONTENT_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}
# What a figure that has no value shows (an en dash).
NONE = "\u2013"
EXTENSIONS = {"json": "json", "csv": "csv", "html": "html", "pdf": "pdf"}

CSV_COLUMNS = (
    "check_id",
    "name",
    "type",
    "project_id",
    "uptime_pct",
    "total_s",
    "downtime_s",
    "incidents",
    "mttr_s",
    "mtbf_s",
    "apdex",
    "apdex_t_ms",
    "runs",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "slo_sli_type",
    "slo_target_pct",
    "slo_attained_pct",
    "slo_budget_remaining_pct",
    "slo_met",
)

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    s = round(seconds)
    if s < 60:
        return f"{seconds:.3g} s" if seconds < 10 else f"{s} s"
    days, rest = divmod(s, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    shown = [f"{n} {u}" for n, u in parts if n][:2]
    return " ".join(shown)


def _pct(v: float | None, digits: int = 3) -> str:
    return NONE if v is None else f"{v:.{digits}f} %"


def _num(v: float | None, digits: int = 1, unit: str = "") -> str:
    return NONE if v is None else f"{v:.{digits}f}{unit}"


_env.filters.update(duration=_duration, pct=_pct, num=_num)


def to_json(report: dict[str, Any]) -> bytes:
    return json.dumps(report, ensure_ascii=False, indent=1).encode()


def to_csv(report: dict[str, Any]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for line in report["checks"]:
        s = line["slo"] or {}
        row = {
            **line,
            "slo_sli_type": s.get("sli_type"),
            "slo_target_pct": s.get("target_pct"),
            "slo_attained_pct": s.get("attained_pct"),
            "slo_budget_remaining_pct": s.get("budget_remaining_pct"),
            "slo_met": s.get("met"),
        }
        w.writerow(["" if row[c] is None else _cell(row[c]) for c in CSV_COLUMNS])
    return out.getvalue().encode()


def _cell(v: Any) -> Any:
    # A cell a spreadsheet would run as a formula is quoted as text.
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def to_html(report: dict[str, Any]) -> bytes:
    return _env.get_template("report.html").render(r=report).encode()


def to_pdf(report: dict[str, Any]) -> bytes:
    """CPU-bound: run it in a thread."""
    # heavy: only PDF reports need it
    import weasyprint  # type: ignore[import-untyped,unused-ignore]

    pdf: bytes = weasyprint.HTML(string=to_html(report).decode()).write_pdf()
    return pdf


RENDERERS = {"json": to_json, "csv": to_csv, "html": to_html, "pdf": to_pdf}
