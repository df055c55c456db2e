"""SLO alerts: a check's SLO crossing its budget warning, exhausting its budget or
burning faster than its threshold over its burn window is told once per crossing
(docs/slo-alerts.md).

Every `TOCSIN_SLO_EVAL_INTERVAL` seconds (default 60) each SLO's state is computed from
the rollups, as the API's `/slo` computes it (`tocsin.history.slo_state`). The states
that hold are kept on the SLO (`alert_state`: kind → since when). A state that turns on
is a crossing: an `slo_events` row (the SLO's timeline), a message to the check's
channels through the outbox (dedup key `slo:{slo}:{kind}:{since}`, so a crossing is
sent once even when a pass is repeated), and a live `slo.alert` event. A state that
turns off is recorded and told the same way as `{kind}_recovered`; it may cross again
later."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from typing import Any

from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.history import slo_state
from tocsin.notify.channels import notice
from tocsin.notify.router import Router, check_links
from tocsin.store.base import Row, Store, StoreUnavailableError
from tocsin.timestamps import iso

log = logging.getLogger("tocsin.slo_alerts")

INTERVAL_ENV = "TOCSIN_SLO_EVAL_INTERVAL"
DEFAULT_INTERVAL = 60.0
# SLOs read per store round trip.
SCAN_PAGE = 500

# kind → (the SLO setting that turns it on, what the state says, severity, status)
KINDS: dict[str, tuple[str, str, str, str]] = {
    "budget_warning": ("notify_on_budget_warn", "budget_warning", "warning", "DEGRADED"),
    "budget_exhausted": ("notify_on_budget_exhausted", "budget_exhausted", "critical", "DOWN"),
    "burn_rate": ("burn_rate_alert_enabled", "burn_rate_alert", "critical", "DOWN"),
}
_TEXT = {
    "budget_warning": "error budget below {warn}% ({remaining}% left)",
    "budget_exhausted": "error budget exhausted ({remaining}% left)",
    "burn_rate": "burning its error budget at {burn} times the sustainable rate over the"
    " last {window} min",
}


def interval_from_env() -> float:
    raw = os.environ.get(INTERVAL_ENV)
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds, not {raw!r}") from None
    if not 0.1 <= value <= 86_400:
        raise ValueError(f"{INTERVAL_ENV} must be 0.1 to 86400 seconds")
    return value


def _figures(state: Any) -> dict[str, Any]:
    return {
        "current_sli_pct": round(state.sli * 100, 4),
        "error_budget_remaining_pct": round(state.budget_remaining * 100, 4),
        "burn_rate": round(state.burn_rate, 4) if math.isfinite(state.burn_rate) else None,
    }


class SloAlerter:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        events: EventHub,
        router: Router,
        *,
        interval: float | None = None,
    ) -> None:
        self._store = store
        self._engine = engine
        self._events = events
        self._router = router
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        self.crossings = 0

    async def start(self) -> None:
        if self._interval is None:
            self._interval = interval_from_env()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="tocsin-slo")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        assert self._interval is not None
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.evaluate()
            except StoreUnavailableError as exc:
                log.warning("SLO evaluation skipped, database unavailable: %s", exc)
            except Exception:
                log.exception("SLO evaluation failed; will retry")

    async def evaluate(self, now: float | None = None) -> int:
        """One pass over every SLO; answers how many crossings (on or off) it found."""
        now = time.time() if now is None else now
        found = 0
        after = 0
        while True:
            page = await self._store.scan("slos", after_id=after, limit=SCAN_PAGE)
            for s in page:
                try:
                    found += await self._one(s, now)
                except StoreUnavailableError:
                    raise
                except Exception:
                    # This SLO only: the others are evaluated; it is tried next pass.
                    log.exception("evaluating SLO %s failed", s["id"])
            if len(page) < SCAN_PAGE:
                break
            after = int(page[-1]["id"])
        self.passes += 1
        self.crossings += found
        return found

    async def _one(self, s: Row, now: float) -> int:
        org_id = int(s["organization_id"])
        check = await self._store.get_check([org_id], int(s["check_id"]))
        if check is None or not check["is_active"]:
            return 0  # a paused check's SLO waits (its state is kept as it was)
        state = (await slo_state(self._store, [org_id], check, s, now)).state
        held: dict[str, Any] = dict(s.get("alert_state") or {})
        changes: list[tuple[str, dict[str, Any]]] = []
        for kind, (setting, attribute, _, _) in KINDS.items():
            on = bool(s[setting]) and bool(getattr(state, attribute))
            if on and kind not in held:
                held[kind] = {"since": now}
                changes.append((kind, held[kind]))
            elif not on and kind in held:
                since = held.pop(kind)
                changes.append((f"{kind}_recovered", since))
        if not changes:
            await self._store.update("slos", [org_id], s["id"], {"evaluated_at": now})
            return 0
        figures = _figures(state)
        for kind, since in changes:
            await self._tell(s, check, kind, since, figures, now)
        await self._store.update(
            "slos", [org_id], s["id"], {"alert_state": held, "evaluated_at": now}
        )
        return len(changes)

    async def _tell(
        self,
        s: Row,
        check: Row,
        kind: str,
        since: dict[str, Any],
        figures: dict[str, Any],
        now: float,
    ) -> None:
        org_id = int(s["organization_id"])
        base = kind.removesuffix("_recovered")
        recovered = kind != base
        detail = {
            "kind": base,
            "recovered": recovered,
            "since": since.get("since"),
            "target_percentage": s["target_percentage"],
            "budget_warn_pct": s["budget_warn_pct"],
            "burn_rate_threshold": s["burn_rate_threshold"],
            "burn_rate_window_minutes": s["burn_rate_window_minutes"],
            **figures,
        }
        await self._store.insert(
            "slo_events",
            org_id,
            {"slo_id": s["id"], "check_id": check["id"], "kind": kind, "detail": detail, "at": now},
        )
        _, _, severity, status = KINDS[base]
        text = _TEXT[base].format(
            warn=s["budget_warn_pct"],
            remaining=figures["error_budget_remaining_pct"],
            burn=figures["burn_rate"],
            window=s["burn_rate_window_minutes"],
        )
        summary = f"{check['name']}: SLO {'recovered — ' if recovered else ''}{text}"
        message = notice(
            event=f"slo.{kind}",
            summary=summary,
            status="UP" if recovered else status,
            severity="info" if recovered else severity,
            organization_id=org_id,
            at=now,
            check=check,
            links=check_links(check["id"], self._router.public_url),
            extra={"slo": {"id": s["id"], **detail}},
        )
        channels = await self._router.channels_for(org_id, int(check["id"]))
        await self._router.queue_notice(
            org_id,
            [int(c["id"]) for c in channels],
            message,
            f"slo:{s['id']}:{kind}:{round(float(since.get('since') or now) * 1000)}",
            at=now,
            check_id=int(check["id"]),
        )
        self._events.publish(
            org_id,
            "slo.alert",
            {
                "slo_id": s["id"],
                "check_id": check["id"],
                "kind": kind,
                **detail,
                "since": iso(detail["since"]),
                "at": iso(now),
            },
        )
