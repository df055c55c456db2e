"""Connection limits of `tocsin serve` over raw sockets on loopback: request heads too
large or with too many fields get 431, heads and bodies that stall are closed, idle
connections past --max-connections are refused (and logged) without stopping service,
and X-Forwarded-For is believed only from the proxies listed in --forwarded-allow-ips."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from helpers import Server
from tocsin.api.ratelimit import FAILED_AUTH_BURST
from tocsin.cli import main
from tocsin.http_limits import parse_forwarded_allow_ips

MAX_HEADER_SIZE = 4096
# Generous bounds for "was closed at all": the limits under test are 1 to 3 s.
CLOSED_WITHIN = 15.0


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with small limits and short timeouts, shared by the tests below that
    leave it as they found it."""
    s = Server(tmp_path_factory.mktemp("limited") / "data")
    s.start(
        "--max-header-size",
        str(MAX_HEADER_SIZE),
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        "--keep-alive-timeout",
        "1",
    )
    yield s
    s.kill()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=CLOSED_WITHIN)
    sock.settimeout(CLOSED_WITHIN)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length: (status, headers in lower case, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a whole response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed within a response body: {data!r}")
        body += chunk
    return int(lines[0].split()[1]), headers, body


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed); fails if
    it stays open for CLOSED_WITHIN seconds."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {CLOSED_WITHIN} s; got {data!r}") from None
    return data


def request(server: Server, path: str = "/api/users/me", extra: bytes = b"") -> bytes:
    auth = f"Authorization: Bearer {server.token}\r\n".encode()
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + auth + extra + b"\r\n"


def served(server: Server) -> int:
    """The status of a normal request on a new connection."""
    with connect(server) as sock:
        sock.sendall(request(server))
        return read_response(sock)[0]


def assert_refused(answer: bytes, status: int) -> None:
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 %d " % status), answer
    assert b"connection: close" in head, answer


def test_a_request_head_over_the_size_limit_gets_431_and_the_server_keeps_serving(
    limited: Server,
) -> None:
    # One header field larger than the whole limit, in one write.
    with connect(limited) as sock:
        sock.sendall(request(limited, extra=b"X-Big: " + b"a" * 2 * MAX_HEADER_SIZE + b"\r\n"))
        answer = read_until_closed(sock)
    assert_refused(answer, 431)
    assert answer.endswith(b"request header fields too large\n")

    # A head that never ends, sent in pieces: refused once past the limit.
    with connect(limited) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        for _ in range(3 * MAX_HEADER_SIZE // 1024):
            sock.sendall(b"b" * 1024)
            time.sleep(0.01)
        assert_refused(read_until_closed(sock), 431)

    # Trailer fields of a chunked body count like header fields.
    with connect(limited) as sock:
        sock.sendall(
            f"POST /api/ping/{uuid.uuid4()} HTTP/1.1\r\nHost: x\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: "
        )
        for _ in range(3 * MAX_HEADER_SIZE // 1024):
            sock.sendall(b"c" * 1024)
            time.sleep(0.01)
        assert_refused(read_until_closed(sock), 431)

    # Under the limit, and a large body behind a small head, are served; so is the next
    # request on the same connection.
    with connect(limited) as sock:
        sock.sendall(request(limited, extra=b"X-Fits: " + b"d" * (MAX_HEADER_SIZE - 300) + b"\r\n"))
        assert read_response(sock)[0] == 200
        body = b"e" * 200_000
        sock.sendall(
            f"POST /api/ping/{uuid.uuid4()} HTTP/1.1\r\nHost: x\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
            + request(limited)
        )
        assert read_response(sock)[0] not in (431, 408)
        assert read_response(sock)[0] == 200

    assert served(limited) == 200


def test_too_many_header_fields_get_431(limited: Server) -> None:
    # `request` sends Host and Authorization: 98 more make the default limit of 100.
    fields = b"".join(b"X-Field-%d: v\r\n" % i for i in range(98))
    with connect(limited) as sock:
        sock.sendall(request(limited, extra=fields))
        assert read_response(sock)[0] == 200
        sock.sendall(request(limited, extra=fields + b"X-One-Too-Many: v\r\n"))
        answer = read_until_closed(sock)
    assert_refused(answer, 431)
    assert answer.endswith(b"too many header fields\n")
    assert served(limited) == 200


def test_a_request_head_that_stalls_is_closed_after_the_header_timeout(
    limited: Server,
) -> None:
    # Half a request line, then nothing: 408 and closed.
    with connect(limited) as sock:
        sock.sendall(b"GET /api/us")
        assert_refused(read_until_closed(sock), 408)
    # Part of the headers.
    with connect(limited) as sock:
        sock.sendall(b"GET /api/users/me HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert_refused(read_until_closed(sock), 408)
    # Nothing at all: closed without an answer.
    with connect(limited) as sock:
        assert read_until_closed(sock) == b""
    # After a response on a kept-alive connection: idle, then closed without an answer;
    # a head begun after it gets the header timeout, counted from that response.
    with connect(limited) as sock:
        sock.sendall(request(limited))
        assert read_response(sock)[0] == 200
        assert read_until_closed(sock) == b""
    with connect(limited) as sock:
        sock.sendall(request(limited))
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /api/users/me HTTP/1.1\r\n")
        assert_refused(read_until_closed(sock), 408)
    assert served(limited) == 200


def test_a_body_that_stalls_is_closed(limited: Server) -> None:
    # The sign-in route waits for its body: 10 bytes of 100 come, then nothing.
    with connect(limited) as sock:
        sock.sendall(
            b"POST /api/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"email": '
        )
        assert_refused(read_until_closed(sock), 408)
    # A chunked body that stops between chunks.
    with connect(limited) as sock:
        sock.sendall(
            b"POST /api/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"ema\r\n'
        )
        assert_refused(read_until_closed(sock), 408)
    # Answered before its body came (a ping over 100 KB gets 413 from its length), then
    # the body stalls: closed, with no second answer.
    with connect(limited) as sock:
        sock.sendall(
            f"POST /api/ping/{uuid.uuid4()} HTTP/1.1\r\nHost: x\r\n".encode()
            + b"Content-Length: 200000\r\n\r\n0123456789"
        )
        assert read_response(sock)[0] == 413
        assert read_until_closed(sock) == b""
    assert served(limited) == 200


def test_idle_connections_past_max_connections_are_refused_logged_and_then_served(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path / "data")
    server.start("--max-connections", "8", "--header-timeout", "3")
    idle: list[socket.socket] = []
    try:
        idle = [connect(server) for _ in range(8)]
        # Past the limit: answered 503 at once and closed, without reading a request.
        for _ in range(4):
            with connect(server) as extra:
                answer = read_until_closed(extra)
            assert_refused(answer, 503)
            assert b"retry-after: 1" in answer.lower()

        deadline = time.monotonic() + CLOSED_WITHIN
        while "refusing new connections" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
        log = server.log.read_text()
        assert "all 8 connection slots are in use" in log
        assert "open-files limit" in log

        # The idle connections time out (closed by the server, not by us), and then
        # requests are served again.
        for sock in idle:
            assert read_until_closed(sock) == b""
        deadline = time.monotonic() + CLOSED_WITHIN
        while True:
            try:
                if served(server) == 200:
                    break
            except (AssertionError, OSError):
                pass
            assert time.monotonic() < deadline, "not served after the idle ones closed"
            time.sleep(0.2)
    finally:
        for sock in idle:
            sock.close()
        server.kill()


async def failed_sign_ins(
    server: Server, local_address: str = "127.0.0.1", n: int = int(FAILED_AUTH_BURST) + 10
) -> list[int]:
    """`n` requests with a bad token, each claiming a new client address."""
    bad = "Bearer pat_" + "x" * 40
    codes = []
    connector = aiohttp.TCPConnector(local_addr=(local_address, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        for i in range(n):
            headers = {"Authorization": bad, "X-Forwarded-For": f"198.51.100.{i + 1}"}
            async with http.get(server.base + "/api/users/me", headers=headers) as resp:
                codes.append(resp.status)
    return codes


async def test_x_forwarded_for_is_ignored_by_default(server: Server) -> None:
    # A guesser that claims a new address each time is still locked out.
    codes = await failed_sign_ins(server)
    assert 429 in codes, codes


async def test_x_forwarded_for_is_believed_from_the_allowed_proxies_only(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path / "data")
    server.start("--forwarded-allow-ips", "127.0.0.1")
    try:
        # From the proxy: each request is a different client, none locked out.
        codes = await failed_sign_ins(server)
        assert set(codes) == {401}, codes
        # From any other peer the header is ignored (Linux routes 127/8 to loopback).
        codes = await failed_sign_ins(server, local_address="127.0.0.2")
        assert 429 in codes, codes
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-header-size", "100"], "--max-header-size must be 1024 to 16777216 bytes"),
        (["--max-headers", "0"], "--max-headers must be 1 to 10000"),
        (["--header-timeout", "0"], "--header-timeout must be 0.1 to 3600 seconds"),
        (["--body-timeout", "nan"], "--body-timeout must be 0.1 to 3600 seconds"),
        (["--keep-alive-timeout", "-1"], "--keep-alive-timeout must be 0.1 to 3600 seconds"),
        (["--max-connections", "0"], "--max-connections must be 1 to 10000000"),
        (["--max-headers", "many"], "--max-headers: invalid int value: 'many'"),
        (["--forwarded-allow-ips", "10.0.0.1/8"], "'10.0.0.1/8' is not an IP address or net"),
        (["--forwarded-allow-ips", "proxy.example"], "'proxy.example' is not an IP address"),
    ],
)
def test_bad_limit_values_are_refused_with_a_message(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--data-dir", str(tmp_path / "data"), *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_the_environment_sets_the_allowed_proxies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOCSIN_FORWARDED_ALLOW_IPS", "10.0.0.0/8, not-an-address")
    with pytest.raises(SystemExit):
        main(["serve", "--data-dir", str(tmp_path / "data")])
    assert "'not-an-address' is not an IP address" in capsys.readouterr().err
    # IPv4 entries also cover their IPv4-mapped IPv6 form (dual-stack listeners).
    assert parse_forwarded_allow_ips("10.0.0.0/8, 192.0.2.7,::1") == [
        "10.0.0.0/8",
        "::ffff:a00:0/104",
        "192.0.2.7/32",
        "::ffff:c000:207/128",
        "::1/128",
    ]
    assert parse_forwarded_allow_ips("") == []
    assert parse_forwarded_allow_ips(" * ") == ["*"]
