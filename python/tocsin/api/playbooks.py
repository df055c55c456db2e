"""Placeholder: filled in by this issue's work."""

from __future__ import annotations

import falcon.asgi

from tocsin.api.context import AppContext


def register(app: falcon.asgi.App, ctx: AppContext) -> None:  # type: ignore[type-arg]
    pass
