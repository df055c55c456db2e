"""Real servers on loopback for the probe tests: HTTP and HTTPS (certificates from a
trustme CA: valid, expired, expiring, wrong host, self-signed), TCP and UDP echo, and a
DNS server (dnslib) answering every record type the dns probe supports."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiohttp import web
from dnslib import AAAA, CAA, CNAME, MX, NS, QTYPE, RCODE, RR, SOA, SRV, TXT, A, DNSLabel
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from helpers import free_port


@dataclass
class HttpApp:
    """Routes a probe test needs, and what the server saw."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    active: int = 0
    max_active: int = 0

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Hello from the tocsin test server")

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def redirect(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        target = "/" if n <= 1 else f"/redirect/{n - 1}"
        raise web.HTTPFound(target)

    async def loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def slow(self, request: web.Request) -> web.Response:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(float(request.query.get("s", "5")))
        finally:
            self.active -= 1
        return web.Response(text="late")

    async def big(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"x" * 65536
        for _ in range(5 * 16):  # 5 MiB
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "body": body,
                "content_type": request.headers.get("Content-Type"),
                "authorization": request.headers.get("Authorization"),
                "x_probe": request.headers.get("X-Probe"),
            }
        )
        return web.Response(text="echo")

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.root)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_get("/redirect/{n}", self.redirect)
        app.router.add_get("/loop", self.loop)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/big", self.big)
        app.router.add_route("*", "/echo", self.echo)
        return app


class Site:
    """One aiohttp server (HTTP, or HTTPS with the given certificate)."""

    def __init__(self, app: HttpApp, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.port = free_port()
        self.ssl = ssl_context
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app.application(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


@dataclass
class Pki:
    ca: trustme.CA
    valid: trustme.LeafCert
    expired: trustme.LeafCert
    expiring: trustme.LeafCert
    wrong_host: trustme.LeafCert
    untrusted: trustme.LeafCert

    @property
    def ca_pem(self) -> str:
        return self.ca.cert_pem.bytes().decode()


def make_pki() -> Pki:
    ca = trustme.CA()
    now = dt.datetime.now(dt.UTC)
    names = ("localhost", "127.0.0.1")
    return Pki(
        ca=ca,
        valid=ca.issue_cert(*names),
        expired=ca.issue_cert(
            *names, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
        ),
        expiring=ca.issue_cert(*names, not_after=now + dt.timedelta(days=3, hours=12)),
        wrong_host=ca.issue_cert("other.test"),
        untrusted=trustme.CA().issue_cert(*names),
    )


class EchoTcp:
    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 tocsin echo ready\r\n")
            data = await reader.read(1024)
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            pass  # the probe may hang up first; that is its right
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _EchoUdp(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"pong:" + data, addr)  # type: ignore[attr-defined]


class EchoUdp:
    def __init__(self) -> None:
        self.port = free_port()
        self._transport: asyncio.BaseTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            _EchoUdp, local_addr=("127.0.0.1", self.port)
        )

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()


ZONE = "example.test."
BIG_TXT = ["x" * 200 + str(i) for i in range(6)]


class _Resolver(BaseResolver):  # type: ignore[misc]
    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = request.q.qname
        qtype = QTYPE[request.q.qtype]
        name = str(qname)
        if not name.endswith(ZONE):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        answers: dict[str, list[Any]] = {
            "A": [A("192.0.2.10"), A("192.0.2.11")],
            "AAAA": [AAAA("2001:db8::10")],
            "CNAME": [CNAME("target.example.test.")],
            "MX": [MX("mail.example.test.", 10)],
            "NS": [NS("ns1.example.test.")],
            "TXT": [TXT("v=spf1 -all")],
            "SOA": [
                SOA(
                    "ns1.example.test.",
                    "hostmaster.example.test.",
                    (2026112301, 3600, 600, 86400, 60),
                )
            ],
            "SRV": [SRV(10, 5, 5060, "sip.example.test.")],
            "CAA": [CAA(0, "issue", "letsencrypt.org")],
        }
        if name == "big." + ZONE and qtype == "TXT":
            records = [TXT(t) for t in BIG_TXT]
        elif name == "missing." + ZONE:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        else:
            records = answers.get(qtype, [])
        for rdata in records:
            reply.add_answer(RR(DNSLabel(qname), QTYPE.reverse[qtype], rdata=rdata, ttl=60))
        return reply


class _TruncatingHandler(DNSHandler):  # type: ignore[misc]
    udplen = 512


class DnsServer:
    """dnslib on 127.0.0.1, UDP (truncating answers over 512 bytes) and TCP."""

    def __init__(self) -> None:
        self.port = free_port()
        quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self._servers = [
            DNSServer(
                _Resolver(),
                port=self.port,
                address="127.0.0.1",
                tcp=tcp,
                logger=quiet,
                handler=_TruncatingHandler,
            )
            for tcp in (False, True)
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        for s in self._servers:
            s.start_thread()

    def stop(self) -> None:
        for s in self._servers:
            s.stop()
            s.server.server_close()
