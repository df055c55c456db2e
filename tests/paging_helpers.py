"""Receivers for the paging tests: a webhook endpoint on loopback that keeps every POST
by path (people's webhook contact methods, notification channels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from helpers import free_port


@dataclass
class Receiver:
    """Webhook contact methods and channels: every POST kept by path."""

    port: int = field(default_factory=free_port)
    hits: dict[str, list[Any]] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def of(self, name: str) -> list[Any]:
        return self.hits.get(name, [])

    async def _post(self, request: web.Request) -> web.Response:
        self.hits.setdefault(request.match_info["name"], []).append(await request.json())
        return web.Response(text="ok")

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/{name}", self._post)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner
