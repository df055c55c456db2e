"""Agents as the server sees them: which source an agent's results are, whether it is
still online, and what its going away means for the verdicts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.store.base import Row, Store
from tocsin.timestamps import iso

log = logging.getLogger("tocsin.agents")

HEARTBEAT_ENV = "TOCSIN_AGENT_HEARTBEAT_INTERVAL"
MISSED_HEARTBEATS = 3


def heartbeat_interval() -> float:
    raw = os.environ.get(HEARTBEAT_ENV, "").strip()
    try:
        value = float(raw) if raw else 5.0
    except ValueError:
        value = 5.0
    return min(max(value, 0.2), 300.0)


def source_of(agent: Row) -> str:
    """The source name of an agent's results: `geo:<location>` or `agent:<id>`."""
    if agent["kind"] == "geo" and agent["location"]:
        return f"geo:{agent['location']}"
    return f"agent:{agent['id']}"


class AgentFleet:
    """The server's side of its agents: their published statuses, the offline sweep
    (agents silent for three heartbeat intervals go offline), and the verdict sources
    of agents that are gone."""

    def __init__(self, store: Store, engine: Engine, events: EventHub) -> None:
        self.store = store
        self.engine = engine
        self.events = events
        self.interval = heartbeat_interval()
        self._sweeper: asyncio.Task[None] | None = None

    async def sources_gone(self, agent: Row) -> None:
        """An agent offline or revoked: its source is UNKNOWN in every check at once
        (not DOWN), unless another agent of the same geo location still reports."""
        source = source_of(agent)
        if agent["kind"] == "geo":
            peers = await self.store.select(
                "agents",
                [agent["organization_id"]],
                where={"kind": "geo", "location": agent["location"], "status": "online"},
                limit=10,
            )
            if any(p["id"] != agent["id"] and not p["revoked_at"] for p in peers):
                return
        self.engine.expire_source(source)

    def publish_status(self, agent: Row, status: str) -> None:
        self.events.publish(
            agent["organization_id"],
            "agent.status",
            {
                "agent_id": agent["id"],
                "name": agent["name"],
                "source": source_of(agent),
                "status": status,
                "last_heartbeat_at": iso(agent["last_heartbeat_at"]),
            },
        )

    async def sweep(self) -> None:
        """Agents silent for three heartbeat intervals go offline and their sources
        stale in the verdicts at once: UNKNOWN, never DOWN."""
        while True:
            await asyncio.sleep(self.interval / 2)
            try:
                gone = await self.store.mark_agents_offline(
                    time.time() - MISSED_HEARTBEATS * self.interval
                )
            except Exception as exc:
                log.warning("agent offline sweep failed: %s", exc)
                continue
            for agent in gone:
                log.warning("agent %s (%s) is offline", agent["id"], agent["name"])
                self.publish_status(agent, "offline")
                try:
                    await self.sources_gone(agent)
                except Exception as exc:
                    log.warning("agent %s: sources not expired: %s", agent["id"], exc)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self.sweep(), name="agent-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
