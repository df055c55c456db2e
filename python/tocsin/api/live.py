"""`GET /api/events`: Server-Sent Events from the event hub."""

from __future__ import annotations

import falcon.asgi

from tocsin.api.context import AppContext


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    """Add this module's routes."""


async def start(ctx: AppContext) -> None:
    """Called once at server start, after the checks are loaded into the engine."""
