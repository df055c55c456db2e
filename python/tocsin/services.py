"""The composition root: every long-lived service of a tocsin server is built here, once,
and started and stopped here in one written order. The API areas are handed the result
(`Services`, which they know as `AppContext`) and only register routes over it; the
server, the tests and programs that embed tocsin build a server the same way.

    services = Services.build(store, data_dir)
    await services.start()        # engine, writers, workers; then the stored checks
    ...                           # serve requests (tocsin.api.app.create_app)
    await services.stop()         # the reverse; buffered results are written
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tocsin.agent.fleet import AgentFleet
from tocsin.checks import load_checks
from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.incidents import IncidentManager
from tocsin.ingest import ResultWriter
from tocsin.live import LiveBridge
from tocsin.notify.router import Router
from tocsin.notify.subscribers import SmtpSettings, SubscriberMail
from tocsin.notify.worker import Outbox
from tocsin.paging.escalation import Escalator
from tocsin.paging.inbound import InboundProcessor
from tocsin.paging.pager import Pager
from tocsin.pings import PingRecorder
from tocsin.ratelimits import RateLimits
from tocsin.reports import ReportBuilder
from tocsin.security import session_key
from tocsin.statuspages.cache import PublicCache
from tocsin.statuspages.invalidation import Invalidation
from tocsin.store import Retention, Store, StoreUnavailableError
from tocsin.windows import WindowBook
from tocsin.workflow.lifecycle import LifecycleWatcher
from tocsin.workflow.playbooks import PlaybookRunner
from tocsin.workflow.service_book import ServiceBook
from tocsin.workflow.slo_alerts import SloAlerter

log = logging.getLogger("tocsin.services")


@dataclass(slots=True, eq=False)
class Services:
    """Every service of one server. Build with `Services.build`."""

    store: Store
    engine: Engine
    events: EventHub
    data_dir: Path
    writer: ResultWriter
    pings: PingRecorder
    router: Router
    outbox: Outbox
    incidents: IncidentManager
    windows: WindowBook
    agents: AgentFleet
    live: LiveBridge
    # Signs and checks session tokens (DATA_DIR/jwt.key, created on first use).
    session_key: bytes
    # Request budgets per token, per client address, and for failed authentication.
    limits: RateLimits
    # Builds accepted reports in the background (tocsin/reports/).
    reports: ReportBuilder
    # Public status pages, built once until what they show changes.
    public_cache: PublicCache
    # Badges, the same way but apart: any number of label variants of a public badge
    # cannot push the pages out.
    badge_cache: PublicCache
    # Status page subscriptions and their mails (notify/subscribers.py).
    subscribers: SubscriberMail
    # Pages to people's contact methods and the mails that verify them (paging/pager.py).
    pager: Pager
    # Steps incidents through their escalation policies on the engine's timing wheel.
    escalation: Escalator
    # Inbound events (integration keys) applied to incidents by group commit; owns the
    # index of open inbound incidents (paging/inbound.py).
    inbound: InboundProcessor
    # Services' escalation policies and channels, as incidents need them (cached).
    service_book: ServiceBook
    # Runs matching playbooks when incidents open (workflow/playbooks.py).
    playbooks: PlaybookRunner
    # Notices from lifecycle watches (workflow/lifecycle.py).
    lifecycle: LifecycleWatcher
    # SLO budget and burn-rate alerts (workflow/slo_alerts.py).
    slo_alerts: SloAlerter
    retention: Retention = field(default_factory=Retention)
    retention_interval: float = 3600.0
    # Enables `GET /metrics` (the server's own metrics) for this bearer token; None: off.
    operational_metrics_token: str | None = None
    _retention_task: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls,
        store: Store,
        data_dir: Path,
        *,
        engine: Engine | None = None,
        engine_options: dict[str, Any] | None = None,
        events: EventHub | None = None,
        retention: Retention | None = None,
        retention_interval: float = 3600.0,
        smtp: SmtpSettings | None = None,
        public_url: str | None = None,
        operational_metrics_token: str | None = None,
    ) -> Services:
        """The services over an opened `store`. The engine is made from
        `engine_options` (see `tocsin.Engine`) and the event hub with its defaults,
        unless they are given."""
        engine = engine if engine is not None else Engine(**(engine_options or {}))
        events = events if events is not None else EventHub()
        router = Router(store, engine)
        service_book = ServiceBook(store)
        router.services = service_book
        windows = WindowBook(store, engine)
        outbox = Outbox(store, router)
        key = session_key(data_dir)
        subscribers = SubscriberMail(store, windows, key, smtp=smtp, public_url=public_url)
        router.subscribers = outbox.subscribers = subscribers
        subscribers.on_queued.append(outbox.wake)
        pager = Pager(store, outbox.sender, smtp=smtp, public_url=subscribers.public_url)
        outbox.pager = pager
        # Every incident change plans its notifications in its own transaction.
        incidents = IncidentManager(store, engine, events, router)
        incidents.services = service_book
        escalation = Escalator(store, engine, router)
        incidents.on_change.append(escalation.watch)
        inbound = InboundProcessor(store, events, router)
        inbound.on_change.append(escalation.watch_many)
        playbooks = PlaybookRunner(store, engine, events, router)
        incidents.on_change.append(playbooks.watch)
        inbound.on_change.append(playbooks.watch_many)
        router.takeovers.append(playbooks.takeover)
        return cls(
            store=store,
            engine=engine,
            events=events,
            data_dir=data_dir,
            writer=ResultWriter(store),
            pings=PingRecorder(store),
            router=router,
            outbox=outbox,
            incidents=incidents,
            windows=windows,
            agents=AgentFleet(store, engine, events),
            live=LiveBridge(store, engine, events),
            session_key=key,
            limits=RateLimits.from_env(),
            reports=ReportBuilder(store),
            public_cache=PublicCache(max_age=30.0),
            badge_cache=PublicCache(max_age=30.0),
            subscribers=subscribers,
            pager=pager,
            escalation=escalation,
            inbound=inbound,
            service_book=service_book,
            playbooks=playbooks,
            lifecycle=LifecycleWatcher(store, router),
            slo_alerts=SloAlerter(store, engine, events, router),
            operational_metrics_token=operational_metrics_token,
            retention=retention or Retention(),
            retention_interval=retention_interval,
        )

    async def start(self) -> None:
        """Start everything, then load the stored checks. The listeners of the engine
        (result writer, incidents, live events) are attached before the checks load,
        so they see every transition, including the first ones."""
        self.engine.add_listener(self.writer.on_batch)
        self.engine.add_rollup_listener(self.writer.on_rollups)
        self.engine.start()
        self.writer.start()
        self._retention_task = asyncio.get_running_loop().create_task(
            retention_loop(self.store, self.retention, self.retention_interval),
            name="tocsin-retention",
        )
        self.agents.start()
        self.incidents.start()
        await self.escalation.start()
        await self.inbound.start()
        await self.playbooks.start()
        await self.windows.load()
        self.live.start()
        for cache in (self.public_cache, self.badge_cache):
            Invalidation(cache).attach(self.engine, self.events, self.windows)
        self.outbox.start()
        await self.subscribers.refresh()
        self.subscribers.start()
        self.reports.start()
        await self.lifecycle.start()
        await self.slo_alerts.start()
        await load_checks(self.store, self.engine)

    def close_streams(self) -> int:
        """End every open live-event stream (first thing at shutdown: an open stream
        keeps the HTTP server waiting)."""
        return self.events.close_all()

    async def stop(self, *, give_up_after: float = 60.0) -> None:
        """Stop in the reverse order; the engine's buffered results are written (a
        database that is down gets `give_up_after` seconds to come back)."""
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None
        for name, step in (
            ("SLO alerts", self.slo_alerts.close),
            ("lifecycle watches", self.lifecycle.close),
            ("reports", self.reports.close),
            ("status page subscribers", self.subscribers.close),
            ("notification outbox", self.outbox.close),
            ("live events", self.live.close),
            ("playbooks", self.playbooks.close),
            ("inbound events", self.inbound.close),
            ("escalation", self.escalation.close),
            ("incidents", self.incidents.close),
            ("agent sweep", self.agents.stop),
            ("ping writer", self.pings.close),
        ):
            try:
                await step()
            except Exception:
                log.exception("stopping the %s failed", name)
        await self.engine.close()
        await self.writer.close(give_up_after=give_up_after)
        log.info(
            "stopped; %d results written, %d dropped", self.writer.written, self.writer.dropped
        )


async def retention_loop(store: Store, policy: Retention, interval: float) -> None:
    """Enforce the retention policy now and then every `interval` seconds."""
    while True:
        try:
            removed = await store.enforce_retention(policy, time.time())
            if any(removed.values()):
                log.info("retention removed %s", removed)
        except StoreUnavailableError as exc:
            log.warning("retention skipped, database unavailable: %s", exc)
        except Exception:
            log.exception("retention failed; will retry")
        await asyncio.sleep(interval)
