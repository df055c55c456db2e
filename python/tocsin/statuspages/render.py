"""The HTML status page and its 404, rendered on the server with Jinja2 (autoescaped;
the templates carry their own CSS and no script, so the page works without JavaScript)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jinja2
from markupsafe import Markup, escape

from tocsin.statuspages.documents import (
    ComponentUptimeJson,
    PublicComponentJson,
    PublicPageJson,
    PublicUptimeJson,
    UptimeDayJson,
)

# Overall status -> (CSS class, symbol): the status is always also in words.
OVERALL_STYLE = {
    "OPERATIONAL": ("ok", "\u2713"),
    "DEGRADED": ("warn", "!"),
    "OUTAGE": ("bad", "\u2715"),
    "MAINTENANCE": ("maint", "\u2692"),
}
COMPONENT_STYLE = {
    "UP": ("ok", "\u2713"),
    "DEGRADED": ("warn", "!"),
    "LATE": ("warn", "!"),
    "DOWN": ("bad", "\u2715"),
    "MAINTENANCE": ("maint", "\u2692"),
    "PAUSED": ("none", "\u2013"),
    "UNKNOWN": ("none", "?"),
}


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tocsin.statuspages", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["day_title"] = day_title
    env.filters["day_class"] = day_class
    env.filters["pct"] = pct
    env.filters["when"] = when
    return env


def pct(value: float | None) -> str:
    if value is None:
        return "no data"
    text = f"{value:.2f}".rstrip("0").rstrip(".") if value < 100 else "100"
    return f"{text}%"


def when(text: str | None) -> str:
    """An ISO time as people read it (UTC)."""
    if not text:
        return ""
    return text[:16].replace("T", " ") + " UTC"


def day_title(day: UptimeDayJson) -> str:
    """The tooltip of one day's bar: "2026-11-30: 99.95% uptime, 1 incident"."""
    if day["uptime"] is None:
        text = f"{day['date']}: no data"
    else:
        text = f"{day['date']}: {pct(day['uptime'])} uptime"
    n = day["incidents"]
    if n:
        text += f", {n} incident" + ("s" if n != 1 else "")
    return text


def day_class(day: UptimeDayJson) -> str:
    u = day["uptime"]
    if u is None:
        return "none"
    if u >= 99.9 and not day["incidents"]:
        return "ok"
    if u >= 99.0:
        return "warn"
    return "bad"


def bar_html(day: UptimeDayJson) -> str:
    """One day's bar: its colour, and the day in words as its title (tooltip). Written
    without the template engine: a page of 500 components has 45,000 of them."""
    return f'<li class="{day_class(day)}" title="{escape(day_title(day))}"></li>'


@dataclass(frozen=True, slots=True)
class Strip:
    """A component's bars as HTML (`bar_html`, escaped) and, for screen readers (which do
    not read the bars' titles), the days that had incidents."""

    html: str
    incident_days: tuple[str, ...]


class ComponentBlocks:
    """Each component's rendered block (templates/component.html), reused by the next
    build of its page while everything it shows is the same: a rebuild after one
    component changes status renders that one. Bounded; the oldest go first."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._by_key: dict[tuple[int, int], tuple[tuple[object, ...], Markup]] = {}
        self.rendered = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def block(
        self, page_id: int, c: PublicComponentJson, b: ComponentUptimeJson | None, strip: Strip
    ) -> Markup:
        days = len(b["days"]) if b is not None else 0
        uptime = b["uptime"] if b is not None else None
        inputs = (
            c["name"],
            c["description"],
            c["status"],
            c["status_text"],
            b is None,
            uptime,
            days,
            strip.html,
            strip.incident_days,
        )
        key = (page_id, c["check_id"])
        found = self._by_key.get(key)
        if found is not None and found[0] == inputs:
            return found[1]
        html = Markup(  # noqa: S704 (the template's output, autoescaped)
            environment()
            .get_template("component.html")
            .render(
                c=c,
                b=b,
                # Built by bar_html, which escapes what it writes.
                strip=Markup(strip.html),  # noqa: S704
                bad_days=strip.incident_days,
                days=days,
                component_style=COMPONENT_STYLE,
            )
        )
        self.rendered += 1
        if len(self._by_key) >= self.max_entries and key not in self._by_key:
            del self._by_key[next(iter(self._by_key))]
        self._by_key[key] = (inputs, html)
        return html


def render_page(
    page: PublicPageJson,
    uptime: PublicUptimeJson,
    strips: dict[int, Strip],
    blocks: ComponentBlocks,
    *,
    page_id: int,
    feed_url: str,
    subscribe_url: str,
) -> str:
    """The page; `strips` holds each component's bars (`PublicPages.bar_strips`), and
    `blocks` the components rendered by earlier builds."""
    bars = {c["check_id"]: c for c in uptime["components"]}
    empty = Strip("", ())
    rendered = {
        c["check_id"]: blocks.block(
            page_id, c, bars.get(c["check_id"]), strips.get(c["check_id"], empty)
        )
        for c in page["components"]
    }
    style = OVERALL_STYLE.get(page["status"], ("none", "?"))
    return (
        environment()
        .get_template("page.html")
        .render(
            page=page,
            blocks=rendered,
            days=uptime["days"],
            overall_class=style[0],
            overall_symbol=style[1],
            feed_url=feed_url,
            subscribe_url=subscribe_url,
        )
    )


def render_not_found() -> str:
    return environment().get_template("not_found.html").render()
