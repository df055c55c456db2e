"""Incidents opened and resolved by verdict transitions: `/api/incidents`, ack, resolve,
notes and timeline."""

from __future__ import annotations

import falcon.asgi

from tocsin.api.context import AppContext


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    """Add this module's routes."""


async def start(ctx: AppContext) -> None:
    """Called once at server start, after the checks are loaded into the engine."""
