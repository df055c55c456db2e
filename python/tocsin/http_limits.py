"""Connection limits for the API's HTTP server (uvicorn with httptools).

uvicorn bounds neither the size of a request head nor the time it takes to arrive, and
accepts connections until the process runs out of descriptors, after which the event
loop accepts and drops every new connection without a word. This module adds, in a
subclass of uvicorn's httptools protocol:

- a request head (request line and header fields) of at most `max_header_bytes` bytes
  and `max_headers` fields, else `431 Request Header Fields Too Large` and close;
- `header_timeout` seconds for a head to arrive, counted from the connection's opening
  for its first request and from the end of the previous response after that; and
  `body_timeout` seconds without progress for a body: then `408 Request Timeout` (when
  nothing of a response was sent yet, and something of the request arrived) and close;
- `keep_alive_timeout` seconds for an idle connection between requests;
- at most `max_connections` open connections: past it a new connection is answered
  `503` and closed at once, and a WARNING says so (one line per 10 s at most, with the
  count refused since the previous line).

PERF: the hot path gains a few attribute reads and integer operations per request.
Timeouts are not timers per request: one sweep over the open connections every
`tick` seconds (0.05 to 0.5 s) compares their marks with a coarse clock it keeps, and
stops while there is no connection. uvicorn's keep-alive timer (a timer handle made
and cancelled for each request) is replaced by that sweep.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("tocsin.http")

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0
# Descriptors kept apart from connections by the default --max-connections: the
# database, log files, the engine's own (probes take theirs from the same table).
FD_RESERVE = 64
REFUSAL_LOG_INTERVAL = 10.0
# After a 431 or 408 the rest of the client's input is read and dropped for up to this
# long (and this much): closing with unread input would send a reset, which can destroy
# the answer before the client reads it.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 1 << 20

MAX_HEADER_BYTES_RANGE = (1024, 16 << 20)
MAX_HEADERS_RANGE = (1, 10_000)
TIMEOUT_RANGE = (0.1, 3600.0)
MAX_CONNECTIONS_RANGE = (1, 10_000_000)

# What the parser of a connection waits for.
_HEAD = 0  # the next request line and headers (new connection, or after a response)
_BODY = 1  # more of a request body
_BUSY = 2  # nothing: a request is in, its response is not finished
_CLOSING = 3  # nothing: refused, its input is dropped until it closes
_DETACHED = 4  # upgraded to WebSocket; another protocol object has it now


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of `tocsin serve`'s HTTP server; each is a `serve` option (named in
    the errors). `max_connections=None`: the open-files limit minus `FD_RESERVE`."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
    max_connections: int | None = None

    def __post_init__(self) -> None:
        _check("--max-header-size", self.max_header_bytes, MAX_HEADER_BYTES_RANGE, " bytes")
        _check("--max-headers", self.max_headers, MAX_HEADERS_RANGE, "")
        _check("--header-timeout", self.header_timeout, TIMEOUT_RANGE, " seconds")
        _check("--body-timeout", self.body_timeout, TIMEOUT_RANGE, " seconds")
        _check("--keep-alive-timeout", self.keep_alive_timeout, TIMEOUT_RANGE, " seconds")
        if self.max_connections is not None:
            _check("--max-connections", self.max_connections, MAX_CONNECTIONS_RANGE, "")


def _check(option: str, value: float, bounds: tuple[float, float], unit: str) -> None:
    low, high = bounds
    # NaN fails both comparisons, so it is refused too.
    if isinstance(value, bool) or not (low <= value <= high):
        raise ValueError(f"{option} must be {_num(low)} to {_num(high)}{unit}, not {value!r}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def parse_forwarded_allow_ips(text: str | None) -> list[str]:
    """`--forwarded-allow-ips`: comma-separated addresses and networks (CIDR) whose
    `X-Forwarded-For`/`X-Forwarded-Proto` are believed, or `*` for any peer. An IPv4
    entry also covers its IPv4-mapped IPv6 form (a peer seen on a dual-stack socket).
    Empty: none (proxy headers are ignored). ValueError names a malformed entry."""
    entries = [item.strip() for item in (text or "").split(",") if item.strip()]
    if entries == ["*"]:
        return entries
    allowed: list[str] = []
    for item in entries:
        try:
            network = ipaddress.ip_network(item)
        except ValueError as exc:
            raise ValueError(
                f"--forwarded-allow-ips: {item!r} is not an IP address or network"
                f" (e.g. 10.0.0.0/8): {exc}"
            ) from None
        allowed.append(str(network))
        if isinstance(network, ipaddress.IPv4Network):
            mapped = f"::ffff:{network.network_address}/{96 + network.prefixlen}"
            allowed.append(str(ipaddress.ip_network(mapped)))
    return allowed


def open_files_limit() -> int:
    """The soft RLIMIT_NOFILE (a large number when unlimited)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one, log it; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # Linux refuses a soft limit above fs.nr_open; elsewhere, a large finite value.
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("open-files limit stays %d: cannot raise it to %d: %s", soft, target, exc)
            return open_files_limit()
        log.info("open-files limit raised from %d to %d", soft, target)
    else:
        log.info("open-files limit: %d", open_files_limit())
    return open_files_limit()


def default_max_connections(fd_limit: int | None = None) -> int:
    """The open-files limit less `FD_RESERVE` (half of it for a very low limit)."""
    limit = open_files_limit() if fd_limit is None else fd_limit
    return max(1, limit - FD_RESERVE, limit // 2)


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` bound to `limits` and to state
    of its own: use a new one for each server."""
    fd_limit = open_files_limit()
    max_connections = limits.max_connections or default_max_connections(fd_limit)
    shared = _Shared(limits, max_connections, fd_limit)
    log.info(
        "HTTP limits: %d connections, request head %d bytes and %d header fields,"
        " header timeout %g s, body timeout %g s, keep-alive %g s",
        max_connections,
        limits.max_header_bytes,
        limits.max_headers,
        limits.header_timeout,
        limits.body_timeout,
        limits.keep_alive_timeout,
    )
    if max_connections > fd_limit - FD_RESERVE:
        log.warning(
            "--max-connections %d is above the open-files limit %d less %d spare: past"
            " it, new connections are dropped unanswered; raise the hard limit (ulimit -Hn)",
            max_connections,
            fd_limit,
            FD_RESERVE,
        )

    class TocsinHttpToolsProtocol(LimitedHttpToolsProtocol):
        _shared = shared

    return TocsinHttpToolsProtocol


def _plain(status: int, text: bytes, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A short plain-text answer that closes the connection."""
    parts = [STATUS_LINE[status]]
    for name, value in default_headers:
        parts += [name, b": ", value, b"\r\n"]
    parts.append(b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(text))
    if status == 503:
        parts.append(b"retry-after: 1\r\n")
    parts += [b"connection: close\r\n\r\n", text]
    return b"".join(parts)


class _TooManyHeadersError(Exception):
    """Raised from the parser's callback to stop parsing a head with too many fields."""


class _Shared:
    """Per server: the limits, the open connections, the sweep and the refusal count."""

    def __init__(self, limits: ConnectionLimits, max_connections: int, fd_limit: int) -> None:
        self.limits = limits
        self.max_connections = max_connections
        self.fd_limit = fd_limit
        self.tick = min(
            0.5,
            max(0.05, min(limits.header_timeout, limits.body_timeout, limits.keep_alive_timeout))
            / 8,
        )
        # The sweep closes once a mark is older than the timeout plus one tick: marks
        # come from the coarse clock, at most one tick behind, so never early.
        self.header_limit = limits.header_timeout + self.tick
        self.body_limit = limits.body_timeout + self.tick
        self.keep_alive_limit = limits.keep_alive_timeout + self.tick
        self.now = 0.0  # the coarse clock: the event loop's time at the last sweep
        self.conns: set[LimitedHttpToolsProtocol] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.refused = 0  # since the last report
        self.last_report = -math.inf

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.timer is None:
            self.loop = loop
            self.now = loop.time()
            self.timer = loop.call_later(self.tick, self.sweep)

    def sweep(self) -> None:
        loop = self.loop
        assert loop is not None
        now = loop.time()
        # A late sweep (the loop was blocked) only moves the clock: input may wait in
        # the sockets, and this callback runs before the loop reads them.
        late = now - self.now > 3 * self.tick
        self.now = now
        if not late:
            header_limit = self.header_limit
            for conn in tuple(self.conns):
                phase = conn._phase
                if phase == _HEAD:
                    elapsed = now - conn._mark
                    if elapsed > header_limit:
                        conn._time_out()
                    elif (
                        conn._head_bytes == 0
                        and conn.cycle is not None
                        and elapsed > self.keep_alive_limit
                    ):
                        conn._close()  # idle between requests
                elif phase == _BODY:
                    if conn.flow.read_paused:
                        conn._mark = now  # we are not reading; no fault of the client
                    elif now - conn._mark > self.body_limit:
                        conn._time_out()
                elif phase == _CLOSING and now - conn._mark > LINGER_SECONDS:
                    conn.transport.close()
        if self.refused and now - self.last_report >= REFUSAL_LOG_INTERVAL:
            self.report(now)
        if self.conns or self.refused:
            self.timer = loop.call_later(self.tick, self.sweep)
        else:
            self.timer = None

    def refuse(self, loop: asyncio.AbstractEventLoop) -> None:
        self.refused += 1
        now = loop.time()
        if now - self.last_report >= REFUSAL_LOG_INTERVAL:
            self.report(now)
        self.start(loop)

    def report(self, now: float) -> None:
        since = (
            "since start"
            if self.last_report == -math.inf
            else f"in the last {now - self.last_report:.0f} s"
        )
        log.warning(
            "refusing new connections: all %d connection slots are in use"
            " (--max-connections; open-files limit %d); %d refused %s",
            self.max_connections,
            self.fd_limit,
            self.refused,
            since,
        )
        self.refused = 0
        self.last_report = now


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `ConnectionLimits`; made by
    `protocol_class`, which binds `_shared`."""

    _shared: ClassVar[_Shared]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self._shared.limits
        self._phase = _HEAD
        self._mark = 0.0  # when the current wait began (or a body last progressed)
        self._head_bytes = 0  # of the request head now arriving
        self._head_limit = limits.max_header_bytes  # -1 while closing: input dropped
        self._max_headers = limits.max_headers
        self._heads = 0  # request heads parsed on this connection
        self._too_many_headers = False
        self._dropped = 0
        self._refused = False

    # Connections

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        shared = self._shared
        if len(self.connections) >= shared.max_connections:
            self._refused = True
            self.transport = transport
            transport.write(
                _plain(503, b"too many connections\n", self.server_state.default_headers)
            )
            transport.close()
            shared.refuse(self.loop)
            return
        super().connection_made(transport)
        shared.conns.add(self)
        shared.start(self.loop)
        self._mark = shared.now

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._shared.conns.discard(self)
        self._phase = _CLOSING
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._shared.conns.discard(self)
        self._phase = _DETACHED
        super().handle_websocket_upgrade()

    # Input

    def data_received(self, data: bytes) -> None:
        if self._phase != _BODY:
            n = self._head_bytes + len(data)
            if n > self._head_limit:
                self._over_head_limit(data)
                return
            self._head_bytes = n
            self._feed(data)
            return
        # In a body, `_head_bytes` counts what arrived since the last body bytes: the
        # trailer fields of a chunked body, which the parser keeps like header fields.
        self._mark = self._shared.now
        self._head_bytes += len(data)
        self._feed(data)
        if self._head_bytes > self._head_limit and self._phase == _BODY:
            self._refuse(431, b"request header fields too large\n")

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._too_many_headers:
                self._refuse(431, b"too many header fields\n")
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _over_head_limit(self, data: bytes) -> None:
        """`data` would take the head past its limit: parse what fits; if the head ends
        there, go on with the rest (a body, the next request), else 431."""
        if self._phase >= _CLOSING:
            self._dropped += len(data)
            if self._dropped > LINGER_MAX_BYTES:
                self.transport.close()
            return
        budget = self._head_limit - self._head_bytes
        heads = self._heads
        self._head_bytes = self._head_limit
        self._feed(data[:budget])
        if self._phase >= _CLOSING or self.transport.is_closing():
            return
        if self._heads == heads:
            self._refuse(431, b"request header fields too large\n")
        elif len(data) > budget:
            self.data_received(data[budget:])

    # Parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        if len(headers) >= self._max_headers:
            self._too_many_headers = True
            raise _TooManyHeadersError
        # As uvicorn's.
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._head_bytes = 0
        self._heads += 1
        self._mark = self._shared.now
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._head_bytes = 0
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._head_bytes = 0
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            # Answered before its body was in: wait for the next request.
            self._phase = _HEAD
            self._mark = self._shared.now
        else:
            self._phase = _BUSY
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # As uvicorn's, without its keep-alive timer: the sweep closes idle connections.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._phase == _BUSY:
            self._phase = _HEAD
            self._mark = self._shared.now

    # Refusals

    def _close(self) -> None:
        self._phase = _CLOSING
        self.transport.close()

    def _time_out(self) -> None:
        if self._phase == _HEAD and self._head_bytes == 0:
            self._close()  # nothing of a request arrived: nothing to answer
        else:
            self._refuse(408, b"request timeout\n")

    def _refuse(self, status: int, text: bytes) -> None:
        """Answer `status` if no response is under way, then close; the input that
        follows is dropped (for LINGER_SECONDS at most) so the answer is not lost."""
        transport = self.transport
        if self._phase >= _CLOSING or transport.is_closing():
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %d %s", self.client, status, text.decode().strip())
        phase = self._phase
        cycle = self.cycle
        self._phase = _CLOSING
        self._mark = self._shared.now
        self._head_limit = -1
        if phase == _BODY:
            # Answer only if nothing of this request's response was sent.
            answer = cycle is not None and not cycle.response_started and not self.pipeline
        else:
            # Between requests; not while a response (or a queued request) is pending.
            answer = phase == _HEAD and not self.pipeline
        if not answer:
            transport.close()
            return
        if phase == _BODY:
            # Its application waits for the rest of a body that will not come.
            cycle.disconnected = True
            cycle.message_event.set()
        transport.write(_plain(status, text, self.server_state.default_headers))
        if transport.can_write_eof():
            transport.write_eof()
        self.flow.resume_reading()
