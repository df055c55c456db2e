"""The HTML status page and its 404, rendered on the server with Jinja2 (autoescaped;
the templates carry their own CSS and no script, so the page works without JavaScript)."""

from __future__ import annotations

import functools

import jinja2
from markupsafe import Markup, escape

from tocsin.statuspages.documents import PublicPageJson, PublicUptimeJson, UptimeDayJson

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


def render_page(
    page: PublicPageJson,
    uptime: PublicUptimeJson,
    strips: dict[int, str],
    *,
    feed_url: str,
    subscribe_url: str,
) -> str:
    """The page; `strips` holds each component's bars as HTML (`bar_html`)."""
    bars = {c["check_id"]: c for c in uptime["components"]}
    style = OVERALL_STYLE.get(page["status"], ("none", "?"))
    return (
        environment()
        .get_template("page.html")
        .render(
            page=page,
            bars=bars,
            # Built by bar_html, which escapes what it writes.
            strips={cid: Markup(html) for cid, html in strips.items()},  # noqa: S704
            # For screen readers, which do not read the bars' titles: the days with
            # incidents in words.
            incident_days={
                c["check_id"]: [d["date"] for d in c["days"] if d["incidents"]]
                for c in uptime["components"]
            },
            days=uptime["days"],
            overall_class=style[0],
            overall_symbol=style[1],
            component_style=COMPONENT_STYLE,
            feed_url=feed_url,
            subscribe_url=subscribe_url,
        )
    )


def render_not_found() -> str:
    return environment().get_template("not_found.html").render()
