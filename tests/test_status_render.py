"""What a status page build keeps for the next one (statuspages/render.py, history.py): a
component's block is rendered again only when something it shows changed, and the closed
days of its bars are kept until the day changes."""

from __future__ import annotations

from typing import Any

from tocsin.models import Rollup
from tocsin.statuspages.history import ClosedDays, History
from tocsin.statuspages.public import _day
from tocsin.statuspages.render import ComponentBlocks, Strip, bar_html

DAY = 86_400


def component(**kw: Any) -> Any:
    return {
        "check_id": 7,
        "name": "Database (EU)",
        "section": "",
        "description": "",
        "status": "UP",
        "status_text": "Operational",
        **kw,
    }


def uptime(pct: float | None = 99.5) -> Any:
    day = {"date": "2026-12-01", "uptime": pct, "downtime_s": 0.0, "incidents": 0}
    return {"check_id": 7, "name": "x", "section": "", "uptime": pct, "days": [day]}


def test_a_block_is_rendered_again_only_when_what_it_shows_changes() -> None:
    blocks = ComponentBlocks()
    strip = Strip(bar_html(uptime()["days"][0]), ())
    first = blocks.block(1, component(), uptime(), strip)
    assert 'data-check-id="7"' in first and "Database (EU)" in first
    assert 'title="2026-12-01: 99.5% uptime"' in first
    assert blocks.block(1, component(), uptime(), Strip(strip.html, ())) is first
    assert blocks.rendered == 1
    down = blocks.block(1, component(status="DOWN", status_text="Outage"), uptime(), strip)
    assert "Outage" in down and blocks.rendered == 2
    # Another page showing the same check keeps its own block.
    blocks.block(2, component(), uptime(), strip)
    assert blocks.rendered == 3
    # A day with an incident is told in words too.
    told = blocks.block(1, component(), uptime(), Strip(strip.html, ("2026-12-01",)))
    assert "Days with incidents: 2026-12-01." in told


def test_names_are_escaped() -> None:
    blocks = ComponentBlocks()
    html = blocks.block(1, component(name="<script>x</script>"), None, Strip("", ()))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_closed_days_are_kept_until_the_day_changes() -> None:
    history = History(max_age=3600)
    today = 20_000 * DAY
    first = today - 89 * DAY
    entry = ClosedDays(today, first, 100.0, (), "", (), 0, 0)
    history.put(7, entry)
    assert history.get(7, today, first, 200.0) is entry
    assert history.get(7, today + DAY, first + DAY, 200.0) is None  # a new day
    assert history.get(7, today, first - DAY, 200.0) is None  # another span of days
    assert history.get(7, today, first, 100.0 + 3601) is None  # too old
    history.forget({7})
    assert history.get(7, today, first, 200.0) is None


def test_a_day_counts_no_time_before_its_check_existed() -> None:
    day_ms = DAY * 1000
    start = 20_000 * day_ms
    # A day bucket (as merged: the whole day), down since the check was made at 18:00.
    bucket = Rollup(7, start, day_ms, 0, 360, 0, 6 * 3_600_000, 0, 1, b"\0\0\0\0")
    now = (start + 2 * day_ms) / 1000
    made_at_18 = start + 18 * 3_600_000
    day, counted, down = _day(7, start // 1000, bucket, {}, now, made_at_18)
    assert day["uptime"] == 0.0 and counted == down == 6 * 3_600_000
    # Made before the day: the whole day counts.
    day, counted, _ = _day(7, start // 1000, bucket, {}, now, start - day_ms)
    assert day["uptime"] == 75.0 and counted == day_ms
    # Made after the day: nothing counts.
    day, counted, _ = _day(7, start // 1000, bucket, {}, now, start + 2 * day_ms)
    assert day["uptime"] is None and counted == 0
