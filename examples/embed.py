"""Embedding tocsin's engine in an asyncio program: an HTTP check against a local
server, a custom probe plugin, and the event stream. Runs for about 4 seconds."""

import asyncio
import contextlib
import random

from aiohttp import web

import tocsin


@tocsin.probe("coin")
async def coin(check: tocsin.Check) -> tocsin.ProbeOutcome:
    """A probe plugin: any async function returning a ProbeOutcome."""
    if random.random() < check.options["p_up"]:
        return tocsin.ProbeOutcome.up()
    return tocsin.ProbeOutcome.down("protocol_error", "tails")


async def main() -> None:
    app = web.Application()
    app.router.add_get("/", lambda request: web.Response(text="hello"))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}/"

    async with tocsin.Engine() as engine:
        events = engine.events()
        engine.upsert(
            [
                tocsin.Check(id=1, type="uptime", url=url, interval=1),
                tocsin.Check(id=2, type="coin", interval=1, options={"p_up": 0.5}),
            ]
        )
        one_off = await engine.run_once(tocsin.Check(id=3, type="uptime", url=url))
        print("run_once:", one_off.status, f"{one_off.latency_ms:.1f} ms")

        async def show() -> None:
            async for event in events:
                if isinstance(event, tocsin.StatusChange):
                    change = f"{event.previous} -> {event.current}"
                    print(f"check {event.check_id}: {change} ({event.reason})")
                else:
                    print(f"check {event.check_id}: {event.status} in {event.latency_ms:.1f} ms")

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(show(), timeout=4)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
