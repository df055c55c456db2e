"""`tocsin serve`: the API and the engine in one process and one event loop.

Start-up: open the store (migrations), create the first admin and token on a fresh data
directory, build and start the services (tocsin/services.py: the engine and every
worker, then the stored checks), serve. SIGINT/SIGTERM: stop accepting requests, stop
the services (the engine's buffered results are written), close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from tocsin import http_limits
from tocsin.api.app import create_app
from tocsin.notify.subscribers import SmtpSettings
from tocsin.security import hash_password, hash_token, new_password, new_token
from tocsin.services import Services
from tocsin.store import Retention, Store, open_store

# The collector's thresholds while serving (see `serve`); the defaults are (700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)

log = logging.getLogger("tocsin.server")

CREDENTIALS_FILE = "initial-credentials"
ADMIN_EMAIL = "admin@localhost"


async def bootstrap(store: Store, data_dir: Path) -> Path | None:
    """On an empty database: an organisation, an OWNER admin and a personal access
    token, written to `DATA_DIR/initial-credentials` (0600). Returns that path."""
    if await store.count_users() > 0:
        return None
    password = new_password()
    token = new_token()
    user_id = await store.create_user(ADMIN_EMAIL, hash_password(password), superuser=True)
    org = await store.create_organization("Default")
    await store.add_membership(org["id"], user_id, "OWNER")
    await store.create_token(user_id, "initial", token[:8], hash_token(token))
    path = data_dir / CREDENTIALS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"email={ADMIN_EMAIL}\npassword={password}\ntoken={token}\n")
    os.chmod(path, 0o600)
    return path


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # NOTE: signals are handled by `serve` below, which must flush results after
        # uvicorn stops; uvicorn's own handling would re-raise them and skip that.
        yield


async def serve(
    *,
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    database: str | None = None,
    ready: asyncio.Event | None = None,
    engine_options: dict[str, Any] | None = None,
    retention: Retention | None = None,
    retention_interval: float = 3600.0,
    connection_limits: http_limits.ConnectionLimits | None = None,
    forwarded_allow_ips: list[str] | tuple[str, ...] = (),
    operational_metrics_token: str | None = None,
    smtp: SmtpSettings | None = None,
    public_url: str | None = None,
) -> None:
    """Run until SIGINT/SIGTERM. `engine_options` go to `tocsin.Engine` (limits, probe
    threads, extra trusted CAs); `retention` says how long each data tier is kept,
    enforced every `retention_interval` seconds. `connection_limits` bound the HTTP
    server's connections (see `tocsin.http_limits`); `X-Forwarded-For` and
    `X-Forwarded-Proto` are believed only from peers in `forwarded_allow_ips` (see
    `tocsin.http_limits.parse_forwarded_allow_ips`), from none by default. `smtp` sends
    the server's own mails (status page subscribers; none without it), with links to
    `public_url` (default `http://{host}:{port}`; also the base of channels' links when
    given)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # noqa: ASYNC240  (start-up)
    # An existing directory open to others is closed too (database, keys, credentials).
    if data_dir.stat().st_mode & 0o077:  # noqa: ASYNC240
        log.warning("data directory %s was open to other users: now 0700", data_dir)
        data_dir.chmod(0o700)  # noqa: ASYNC240
    store = open_store(database, data_dir)
    await store.open()
    try:
        created = await bootstrap(store, data_dir)
        if created:
            log.warning("first start: admin user and API token written to %s", created)
        await _run(
            store,
            data_dir,
            host,
            port,
            ready,
            engine_options or {},
            retention or Retention(),
            retention_interval,
            connection_limits or http_limits.ConnectionLimits(),
            list(forwarded_allow_ips),
            operational_metrics_token=operational_metrics_token,
            smtp=smtp,
            public_url=public_url,
        )
    finally:
        await store.close()


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so a busy port is a clear error before
    anything starts (uvicorn would exit the process from inside the loop)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


async def _run(
    store: Store,
    data_dir: Path,
    host: str,
    port: int,
    ready: asyncio.Event | None,
    engine_options: dict[str, Any],
    retention: Retention,
    retention_interval: float,
    connection_limits: http_limits.ConnectionLimits,
    forwarded_allow_ips: list[str],
    operational_metrics_token: str | None = None,
    smtp: SmtpSettings | None = None,
    public_url: str | None = None,
) -> None:
    sock = listen_socket(host, port)
    try:
        services = Services.build(
            store,
            data_dir,
            engine_options=engine_options,
            retention=retention,
            retention_interval=retention_interval,
            smtp=smtp,
            public_url=public_url or f"http://{host}:{port}",
            # `GET /metrics` (the server's own metrics): off unless a token is given.
            operational_metrics_token=operational_metrics_token or None,
        )
        if public_url:
            services.router.public_url = public_url
        if smtp is not None:
            log.info("subscriber mails via %s", smtp.describe())
            if not public_url:
                log.warning(
                    "links in mails will start with http://%s:%d; set --public-url to the"
                    " address people reach this server at",
                    host,
                    port,
                )
    except BaseException:
        sock.close()
        raise
    try:
        await services.start()
        # What start-up made (modules, templates, the stored checks' rows and caches)
        # lives as long as the process: out of the collector's full passes, which would
        # otherwise walk it again and again and stall the loop (tens of ms with a large
        # fleet, on whichever request is running).
        gc.collect()
        gc.freeze()
        # A request that builds a large document (a status page of hundreds of
        # components) makes tens of thousands of short-lived objects: with the default
        # thresholds they are promoted while still in use, and the full passes that
        # follow land in other requests. Young collections less often, full ones rarer.
        gc.set_threshold(*GC_THRESHOLDS)
        await _serve(services, sock, host, port, ready, connection_limits, forwarded_allow_ips)
    finally:
        sock.close()
        await services.stop()


async def _serve(
    services: Services,
    sock: socket.socket,
    host: str,
    port: int,
    ready: asyncio.Event | None,
    connection_limits: http_limits.ConnectionLimits,
    forwarded_allow_ips: list[str],
) -> None:
    app = create_app(services)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        # httptools with header, timeout and connection limits (tocsin.http_limits);
        # it keeps the keep-alive timeout itself (timeout_keep_alive is not used).
        http=http_limits.protocol_class(connection_limits),
        timeout_keep_alive=max(1, round(connection_limits.keep_alive_timeout)),
        # Proxy headers only from the peers the operator lists; none by default.
        proxy_headers=bool(forwarded_allow_ips),
        forwarded_allow_ips=forwarded_allow_ips,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    if forwarded_allow_ips:
        log.info("proxy headers believed from %s", ", ".join(forwarded_allow_ips))
    server = _Server(config)
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        log.info("received %s, shutting down", sig.name)
        # Open event streams would keep the HTTP server waiting for them.
        services.close_streams()
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        serving = loop.create_task(server.serve(sockets=[sock]))
        # uvicorn exposes `started` only as a flag.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if server.started:
            log.info("listening on http://%s:%d", host, port)
            if ready is not None:
                ready.set()
        await serving
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
