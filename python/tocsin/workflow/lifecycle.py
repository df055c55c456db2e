"""Lifecycle watches: notices when a tracked product nears its end of life or a new
release appears, from a feed in the endoflife.date JSON shape (docs/lifecycle.md).

The feed (`TOCSIN_LIFECYCLE_FEED`) is a directory (a path or a `file://` URL) holding
`{platform}.json`, one JSON file mapping each platform to its document, or an
`http(s)://` base URL answering `{base}/{platform}.json`. A product's document is the
list of its release cycles: `{"cycle", "releaseDate", "eol" (a date, or true/false),
"latest", "latestReleaseDate", "lts", …}`, newest first.

Every `TOCSIN_LIFECYCLE_INTERVAL` seconds (default 6 h; at once when a watch is created
or changed) each watch is compared with its product's document (read once per pass):

- `eol_90d` / `eol_30d` / `eol_7d`: the tracked cycle (the watch's `version`, else the
  newest cycle) ends within that many days and the watch's flag for it is on; only the
  tightest crossed one is told.
- `new_release`: the cycle's latest release differs from the one the watch knew
  (`known_latest`); the first pass only records it.

Each notice is a `lifecycle_notices` row, unique per watch and notice key
(`eol_30d:{cycle}`, `new_release:{version}`), so it is given once, across restarts too;
its message goes to the watch's channels through the outbox with the dedup key
`lifecycle:{watch_id}:{notice key}` (queued before the row is written: a crash between
the two queues it again, and the outbox sends it once). A feed that cannot be read is
logged and tried again next pass."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tocsin.notify.channels import notice
from tocsin.notify.router import Router
from tocsin.store.base import ConflictError, Row, Store, StoreUnavailableError

log = logging.getLogger("tocsin.lifecycle")

FEED_ENV = "TOCSIN_LIFECYCLE_FEED"
INTERVAL_ENV = "TOCSIN_LIFECYCLE_INTERVAL"
DEFAULT_INTERVAL = 6 * 3600.0
# Watches read per store round trip, and at most this many per pass.
SCAN_PAGE = 500
MAX_PER_PASS = 100_000
# A product document larger than this is refused (endoflife.date's are a few kB).
MAX_DOCUMENT = 4 * 1024 * 1024
FETCH_TIMEOUT = 15.0
# What a platform may be: an endoflife.date product name (also a safe file name).
PLATFORM = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,99}$")
# (days, the watch's flag), tightest first.
THRESHOLDS = ((7, "notify_7d"), (30, "notify_30d"), (90, "notify_90d"))


class FeedError(Exception):
    """The feed could not give a product's document."""


def interval_from_env() -> float:
    raw = os.environ.get(INTERVAL_ENV)
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds, not {raw!r}") from None
    if not 0.1 <= value <= 30 * 86_400:
        raise ValueError(f"{INTERVAL_ENV} must be 0.1 s to 30 days")
    return value


class Feed:
    """Where product documents come from (see the module's docstring)."""

    def __init__(self, location: str) -> None:
        self.location = location.strip()
        parsed = urllib.parse.urlsplit(self.location)
        self.remote = parsed.scheme in ("http", "https")
        if self.remote:
            self.path: Path | None = None
        elif parsed.scheme == "file":
            self.path = Path(urllib.parse.unquote(parsed.path))
        elif not parsed.scheme:
            self.path = Path(self.location)
        else:
            raise ValueError(f"{FEED_ENV}: unsupported feed {self.location!r}")

    @classmethod
    def from_env(cls) -> Feed | None:
        raw = os.environ.get(FEED_ENV, "").strip()
        return cls(raw) if raw else None

    async def product(self, platform: str, http: aiohttp.ClientSession | None) -> list[Row]:
        if not PLATFORM.match(platform):
            raise FeedError(f"not a product name: {platform!r}")
        if self.remote:
            assert http is not None
            doc = await self._fetch(http, f"{self.location.rstrip('/')}/{platform}.json")
        else:
            doc = await asyncio.to_thread(self._read, platform)
        return cycles_of(doc, platform)

    def _read(self, platform: str) -> Any:
        assert self.path is not None
        try:
            if self.path.is_dir():
                file = self.path / f"{platform}.json"
                if not file.is_file():
                    raise FeedError(f"{file} not found")
                if file.stat().st_size > MAX_DOCUMENT:
                    raise FeedError(f"{file} is too large")
                return json.loads(file.read_bytes())
            if self.path.stat().st_size > 16 * MAX_DOCUMENT:
                raise FeedError(f"{self.path} is too large")
            whole = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            raise FeedError(f"{self.path}: {exc}") from exc
        if not isinstance(whole, dict) or platform not in whole:
            raise FeedError(f"{self.path} has no product {platform!r}")
        return whole[platform]

    async def _fetch(self, http: aiohttp.ClientSession, url: str) -> Any:
        try:
            async with http.get(url, allow_redirects=True, max_redirects=3) as resp:
                if resp.status != 200:
                    raise FeedError(f"{url} answered {resp.status}")
                body = await resp.content.read(MAX_DOCUMENT + 1)
                if len(body) > MAX_DOCUMENT:
                    raise FeedError(f"{url} is too large")
                return json.loads(body)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FeedError(f"{url}: {exc!r}") from exc


def cycles_of(doc: Any, platform: str) -> list[Row]:
    """The release cycles of a product document (a list of objects with a `cycle`)."""
    if not isinstance(doc, list):
        raise FeedError(f"the document of {platform!r} is not a list of cycles")
    return [c for c in doc if isinstance(c, dict) and c.get("cycle") not in (None, "")]


def _date(value: Any) -> dt.date | None:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return dt.date.fromisoformat(value[:10])
    return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return str(value)


def pick_cycle(cycles: Sequence[Row], version: str | None) -> Row | None:
    """The cycle a watch tracks: its `version` (the cycle itself, or a release in it:
    "3.11.4" is in "3.11"), else the newest cycle (the first of the document)."""
    if not cycles:
        return None
    if not version:
        return cycles[0]
    wanted = version.strip()
    for c in cycles:
        if str(c["cycle"]) == wanted:
            return c
    within = [c for c in cycles if wanted.startswith(f"{c['cycle']}.")]
    return max(within, key=lambda c: len(str(c["cycle"])), default=None)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """What the feed says of a watch's cycle."""

    cycle: str
    eol: str | bool | None
    eol_date: dt.date | None
    days_left: int | None
    is_eol: bool
    latest: str | None
    latest_release_date: str | None
    release_date: str | None
    lts: bool

    def json(self) -> dict[str, Any]:
        return {
            "cycle": self.cycle,
            "eol": self.eol_date.isoformat() if self.eol_date else self.eol,
            "days_left": self.days_left,
            "is_eol": self.is_eol,
            "latest": self.latest,
            "latest_release_date": self.latest_release_date,
            "release_date": self.release_date,
            "lts": self.lts,
        }


def lifecycle_of(cycle: Row, today: dt.date) -> Lifecycle:
    raw_eol = cycle.get("eol")
    eol_date = _date(raw_eol)
    days_left = (eol_date - today).days if eol_date else None
    if eol_date is not None:
        is_eol = days_left is not None and days_left <= 0
        eol: str | bool | None = eol_date.isoformat()
    else:
        is_eol = raw_eol is True
        eol = raw_eol if isinstance(raw_eol, bool) else None
    return Lifecycle(
        cycle=str(cycle["cycle"]),
        eol=eol,
        eol_date=eol_date,
        days_left=days_left,
        is_eol=is_eol,
        latest=_text(cycle.get("latest")),
        latest_release_date=_text(cycle.get("latestReleaseDate")),
        release_date=_text(cycle.get("releaseDate")),
        lts=bool(cycle.get("lts")),
    )


def eol_notice(watch: Mapping[str, Any], info: Lifecycle) -> str | None:
    """The tightest end-of-life notice the watch crossed (`eol_30d`), if any."""
    if info.days_left is None:
        return None
    for days, flag in THRESHOLDS:
        if info.days_left <= days and watch.get(flag):
            return f"eol_{days}d"
    return None


def _name(watch: Mapping[str, Any]) -> str:
    vendor = (watch.get("vendor") or "").strip()
    product = f"{vendor} {watch['platform']}" if vendor else str(watch["platform"])
    resource = watch.get("resource_id")
    return f"{product} ({resource})" if resource else product


class LifecycleWatcher:
    def __init__(
        self,
        store: Store,
        router: Router,
        *,
        feed: Feed | None = None,
        interval: float | None = None,
    ) -> None:
        self._store = store
        self._router = router
        self._feed = feed
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        # platform -> its cycles as last read (what the API shows of a watch).
        self._known: dict[str, list[Row]] = {}
        self.passes = 0
        self.notices = 0

    @property
    def feed(self) -> Feed | None:
        return self._feed

    async def start(self) -> None:
        if self._interval is None:
            self._interval = interval_from_env()
        if self._feed is None:
            self._feed = Feed.from_env()
        if self._feed is None:
            log.info("lifecycle watches: no feed (%s not set); nothing is checked", FEED_ENV)
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="tocsin-lifecycle")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def wake(self) -> None:
        """A watch was created or changed: check now rather than at the next pass."""
        self._wake.set()

    def info(self, platform: str, version: str | None) -> Lifecycle | None:
        """What the last pass read of the watch's cycle (None before it, or unknown)."""
        cycle = pick_cycle(self._known.get(platform, []), version)
        return None if cycle is None else lifecycle_of(cycle, dt.datetime.now(dt.UTC).date())

    async def _loop(self) -> None:
        assert self._interval is not None
        while True:
            try:
                await self.check_all()
            except StoreUnavailableError as exc:
                log.warning("lifecycle watches skipped, database unavailable: %s", exc)
            except Exception:
                log.exception("lifecycle pass failed; will retry")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    async def check_all(self, now: float | None = None) -> int:
        """One pass over every watch; answers how many notices it gave."""
        if self._feed is None:
            return 0
        now = time.time() if now is None else now
        if self._feed.remote and self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT),
                headers={"User-Agent": "tocsin lifecycle watches"},
            )
        docs: dict[str, list[Row] | None] = {}
        given = 0
        after = seen = 0
        while seen < MAX_PER_PASS:
            page = await self._store.scan("lifecycle_watches", after_id=after, limit=SCAN_PAGE)
            for watch in page:
                platform = str(watch["platform"])
                if platform not in docs:
                    try:
                        docs[platform] = await self._feed.product(platform, self._http)
                        self._known[platform] = docs[platform] or []
                    except FeedError as exc:
                        log.warning("lifecycle feed: %s (tried again next pass)", exc)
                        docs[platform] = None
                cycles = docs[platform]
                if cycles is None:
                    continue
                try:
                    given += await self._one(watch, cycles, now)
                except StoreUnavailableError:
                    raise
                except Exception:
                    log.exception("lifecycle watch %s failed", watch["id"])
            seen += len(page)
            if len(page) < SCAN_PAGE:
                break
            after = int(page[-1]["id"])
        self.passes += 1
        self.notices += given
        return given

    async def _one(self, watch: Row, cycles: list[Row], now: float) -> int:
        org_id = int(watch["organization_id"])
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        fields: dict[str, Any] = {"last_checked_at": now}
        cycle = pick_cycle(cycles, watch.get("version"))
        wanted: list[tuple[str, str, dict[str, Any]]] = []
        if cycle is not None:
            info = lifecycle_of(cycle, today)
            kind = eol_notice(watch, info)
            if kind is not None:
                wanted.append((kind, f"{kind}:{info.cycle}", info.json()))
            latest = info.latest or info.cycle
            known = watch.get("known_latest")
            if known != latest:
                fields["known_latest"] = latest
                if known is not None and watch.get("notify_on_new"):
                    detail = {**info.json(), "previous_latest": known}
                    wanted.append(("new_release", f"new_release:{latest}", detail))
        given = 0
        if wanted:
            done = {
                r["notice"]
                for r in await self._store.select(
                    "lifecycle_notices", [org_id], where={"watch_id": watch["id"]}, limit=10_000
                )
            }
            for kind, key, detail in wanted:
                if key not in done:
                    given += await self._tell(watch, kind, key, detail, now)
        if await self._store.update("lifecycle_watches", [org_id], watch["id"], fields) is None:
            return given  # deleted meanwhile
        return given

    async def _tell(
        self, watch: Row, kind: str, key: str, detail: dict[str, Any], now: float
    ) -> int:
        org_id = int(watch["organization_id"])
        name = _name(watch)
        detail = {
            **detail,
            "kind": kind,
            "platform": watch["platform"],
            "vendor": watch.get("vendor") or "",
            "version": watch.get("version"),
            "resource_id": watch.get("resource_id"),
            "resource_type": watch.get("resource_type"),
        }
        if kind == "new_release":
            summary = f"{name}: new release {detail['latest']} of {detail['cycle']}"
            severity, status = "info", "UP"
        else:
            days = detail["days_left"]
            when = f"in {days} days" if days > 0 else ("today" if days == 0 else "already")
            summary = f"{name} {detail['cycle']} reaches end of life {when} ({detail['eol']})"
            severity = "critical" if kind == "eol_7d" else "warning"
            status = "DEGRADED"
        message = notice(
            event=f"lifecycle.{kind}",
            summary=summary,
            status=status,
            severity=severity,
            organization_id=org_id,
            at=now,
            target=watch.get("resource_id"),
            extra={"lifecycle": {"watch_id": watch["id"], "notice": key, **detail}},
        )
        # Queued first: a crash before the row is written queues it again next pass,
        # and the outbox sends one message per dedup key.
        await self._router.queue_notice(
            org_id,
            [int(c) for c in watch.get("channel_ids") or []],
            message,
            f"lifecycle:{watch['id']}:{key}",
            at=now,
        )
        try:
            await self._store.insert(
                "lifecycle_notices",
                org_id,
                {"watch_id": watch["id"], "notice": key, "detail": detail, "at": now},
            )
        except ConflictError:
            return 0  # given by a pass before (or another process)
        log.info("lifecycle watch %s: %s", watch["id"], summary)
        return 1
