"""The `database` probe: connect to a PostgreSQL (asyncpg), MySQL or MariaDB (aiomysql),
Redis (redis-py) or MongoDB (PyMongo's asyncio client) server, authenticate, optionally
run a read-only query and compare the first value of its answer with the expected result.

Connection, authentication, query and result failures are distinct error kinds:
`dns_error`, `connect_refused`, `connect_timeout`, `connect_error`, `tls_error`,
`auth_failed`, `database_not_found`, `query_error`, `read_only_violation`,
`result_mismatch`. Queries run read-only where the server can enforce it: PostgreSQL
and MySQL in a READ ONLY transaction (rolled back); Redis and MongoDB accept only read
commands (checked before they are sent, and at validation: see `readonly_problem`).
See docs/probes-and-verdicts.md."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiomysql  # type: ignore[import-untyped]
import asyncpg
import pymysql  # type: ignore[import-untyped]
import redis.asyncio as aredis
import redis.exceptions as rex
from pymongo import AsyncMongoClient
from pymongo import errors as merr
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tocsin.models import Check, ProbeOutcome, Status
from tocsin.probes import default_registry

DEFAULT_PORTS = {
    "postgresql": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "redis": 6379,
    "mongodb": 27017,
}
MAX_SHOWN = 200

# SQL that writes (or changes the session) is refused before it is sent.
_SQL_WRITE = re.compile(
    r"^\s*(insert|update|delete|merge|upsert|replace|drop|create|alter|truncate|grant|revoke"
    r"|comment|vacuum|analyze|cluster|reindex|lock|copy|call|do|set|reset|begin|commit"
    r"|rollback|savepoint|release|prepare|execute|deallocate|load|rename|handler|flush"
    r"|kill|shutdown|install|uninstall|optimize|repair|purge)\b",
    re.IGNORECASE,
)
# Redis commands a check may send (reads only).
REDIS_READS = frozenset(
    {
        "PING", "ECHO", "GET", "MGET", "EXISTS", "TYPE", "TTL", "PTTL", "STRLEN", "GETRANGE",
        "HGET", "HMGET", "HLEN", "HEXISTS", "HGETALL", "LLEN", "LINDEX", "LRANGE", "SCARD",
        "SISMEMBER", "ZCARD", "ZSCORE", "ZRANK", "ZCOUNT", "DBSIZE", "INFO", "TIME",
        "XLEN", "PFCOUNT", "BITCOUNT", "GETBIT", "OBJECT", "MEMORY",
    }
)  # fmt: skip


class DbError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def readonly_problem(db_type: str, query: str) -> str | None:
    """Why `query` may not be a check's (it would write, or cannot be read), else None.
    Used at validation (422) and again before a probe sends it."""
    query = query.strip()
    if not query:
        return None
    if db_type in ("postgresql", "mysql", "mariadb"):
        for statement in (s for s in query.split(";") if s.strip()):
            if _SQL_WRITE.match(statement) or re.search(
                r"\b(into\s+outfile|for\s+update|for\s+share)\b", statement, re.IGNORECASE
            ):
                return "must be a read-only query (SELECT, SHOW, WITH …, EXPLAIN)"
        if query.rstrip(";").count(";"):
            return "must be one statement"
        return None
    if db_type == "redis":
        command = query.split()[0].upper()
        if command not in REDIS_READS:
            return f"must be a read-only Redis command, not {command}"
        return None
    if db_type == "mongodb":
        try:
            spec = json.loads(query)
        except ValueError:
            return 'must be JSON: {"collection": …, "filter": {…}} or {"command": {…}}'
        if not isinstance(spec, dict):
            return "must be a JSON object"
        if "command" in spec:
            cmd = spec["command"]
            name = next(iter(cmd), "") if isinstance(cmd, dict) and cmd else ""
            if name not in ("ping", "serverStatus", "dbStats", "collStats", "count", "buildInfo"):
                return (
                    "command must be one of ping, serverStatus, dbStats, collStats, count,"
                    " buildInfo"
                )
            return None
        if not isinstance(spec.get("collection"), str) or not spec["collection"]:
            return "needs a collection"
        if "filter" in spec and not isinstance(spec["filter"], dict):
            return "filter must be an object"
        if spec.get("op", "find_one") not in ("find_one", "count"):
            return 'op must be "find_one" or "count"'
        return None
    return None


_COMPARE = re.compile(r"^(>=|<=|!=|==|=|>|<|~)\s*(.*)$", re.DOTALL)


def matches(expected: str, value: Any) -> tuple[bool, str]:
    """Whether the first value matches `db_expected_result`: text equality, or a numeric
    comparison (`>= 10`, `< 5`, `!= 0`, `= 3`), or a regular expression (`~ ^ok`)."""
    shown = "NULL" if value is None else str(value)
    m = _COMPARE.match(expected.strip())
    if m is None:
        return shown == expected.strip(), shown
    op, operand = m.group(1), m.group(2).strip()
    if op == "~":
        try:
            return re.search(operand, shown) is not None, shown
        except re.error:
            return False, shown
    if op in ("=", "=="):
        try:
            return float(shown) == float(operand), shown
        except ValueError:
            return shown == operand, shown
    if op == "!=":
        try:
            return float(shown) != float(operand), shown
        except ValueError:
            return shown != operand, shown
    try:
        a, b = float(shown), float(operand)
    except ValueError:
        return False, shown
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op], shown


def _connection_error(exc: BaseException) -> DbError:
    if isinstance(exc, socket.gaierror):
        return DbError("dns_error", f"cannot resolve the host: {exc}")
    if isinstance(exc, ssl.SSLError):
        return DbError("tls_error", str(exc))
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED
    ):
        return DbError("connect_refused", "connection refused")
    if isinstance(exc, TimeoutError):
        return DbError("connect_timeout", "timed out connecting")
    return DbError("connect_error", f"{type(exc).__name__}: {exc}")


def _tls(o: dict[str, Any]) -> ssl.SSLContext | None:
    if not o.get("db_ssl_enabled"):
        return None
    ctx = ssl.create_default_context()
    if o.get("ssl_verify") is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _postgresql(o: dict[str, Any], wait_s: float) -> tuple[Any, dict[str, Any]]:
    try:
        conn = await asyncpg.connect(
            host=o["db_host"],
            port=o["db_port"],
            user=o.get("db_username") or None,
            password=o.get("db_password") or None,
            database=o.get("db_name") or None,
            ssl=_tls(o) or False,
            timeout=wait_s,
            command_timeout=wait_s,
        )
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise DbError("auth_failed", str(exc)) from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise DbError("database_not_found", str(exc)) from None
    except asyncpg.PostgresError as exc:
        raise DbError("connect_error", f"{type(exc).__name__}: {exc}") from None
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise _connection_error(exc) from None
    try:
        version = conn.get_server_version()
        details: dict[str, Any] = {"server_version": f"{version.major}.{version.minor}"}
        query = (o.get("db_query") or "").strip()
        if not query:
            return None, details
        try:
            async with conn.transaction(readonly=True):
                row = await conn.fetchrow(query)
        except asyncpg.ReadOnlySQLTransactionError as exc:
            raise DbError("read_only_violation", str(exc)) from None
        except asyncpg.PostgresError as exc:
            raise DbError("query_error", f"{type(exc).__name__}: {exc}") from None
        details["rows"] = 0 if row is None else 1
        return (row[0] if row is not None and len(row) else None), details
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 1.0)


async def _mysql(o: dict[str, Any], wait_s: float) -> tuple[Any, dict[str, Any]]:
    try:
        conn = await aiomysql.connect(
            host=o["db_host"],
            port=o["db_port"],
            user=o.get("db_username") or "",
            password=o.get("db_password") or "",
            db=o.get("db_name") or None,
            ssl=_tls(o),
            connect_timeout=wait_s,
            autocommit=False,
        )
    except pymysql.err.OperationalError as exc:
        code = exc.args[0] if exc.args else 0
        if code in (1044, 1045, 1698):
            raise DbError("auth_failed", str(exc.args[-1])) from None
        if code == 1049:
            raise DbError("database_not_found", str(exc.args[-1])) from None
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError | TimeoutError):
            raise _connection_error(cause) from None
        if code == 2003:
            raise DbError("connect_refused", str(exc.args[-1])) from None
        raise DbError("connect_error", str(exc.args[-1])) from None
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise _connection_error(exc) from None
    try:
        details: dict[str, Any] = {"server_version": conn.get_server_info()}
        query = (o.get("db_query") or "").strip()
        if not query:
            return None, details
        async with conn.cursor() as cur:
            try:
                await cur.execute("START TRANSACTION READ ONLY")
                await cur.execute(query)
                row = await cur.fetchone()
            except pymysql.err.MySQLError as exc:
                code = exc.args[0] if exc.args else 0
                kind = "read_only_violation" if code == 1792 else "query_error"
                raise DbError(kind, str(exc.args[-1] if exc.args else exc)) from None
            finally:
                with contextlib.suppress(Exception):
                    await conn.rollback()
        details["rows"] = 0 if row is None else 1
        return (row[0] if row else None), details
    finally:
        conn.close()


async def _redis(o: dict[str, Any], wait_s: float) -> tuple[Any, dict[str, Any]]:
    try:
        db = int(o.get("db_name") or 0)
    except ValueError:
        raise DbError("database_not_found", "db_name must be a Redis database number") from None
    client = aredis.Redis(
        host=o["db_host"],
        port=o["db_port"],
        db=db,
        username=o.get("db_username") or None,
        password=o.get("db_password") or None,
        ssl=bool(o.get("db_ssl_enabled")),
        ssl_cert_reqs="none" if o.get("ssl_verify") is False else "required",
        socket_connect_timeout=wait_s,
        socket_timeout=wait_s,
        # One attempt: a monitor measures the server, not the client's retries.
        retry=Retry(NoBackoff(), 0),
    )
    try:
        try:
            await client.ping()
        except rex.AuthenticationError as exc:
            raise DbError("auth_failed", str(exc)) from None
        except rex.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise DbError("auth_failed", str(exc)) from None
            if "DB index" in str(exc):
                raise DbError("database_not_found", str(exc)) from None
            raise DbError("connect_error", str(exc)) from None
        except rex.TimeoutError:
            raise DbError("connect_timeout", "timed out connecting") from None
        except rex.ConnectionError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OSError | TimeoutError):
                raise _connection_error(cause) from None
            if "refused" in str(exc).lower():
                raise DbError("connect_refused", str(exc)) from None
            raise DbError("connect_error", str(exc)) from None
        details: dict[str, Any] = {}
        query = (o.get("db_query") or "").strip()
        if not query:
            return None, details
        problem = readonly_problem("redis", query)
        if problem is not None:
            raise DbError("read_only_violation", problem)
        try:
            value = await client.execute_command(*query.split())  # type: ignore[no-untyped-call]
        except rex.ResponseError as exc:
            raise DbError("query_error", str(exc)) from None
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, list):
            value = (
                value[0].decode(errors="replace")
                if value and isinstance(value[0], bytes)
                else (value[0] if value else None)
            )
        return value, details
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


async def _mongodb(o: dict[str, Any], wait_s: float) -> tuple[Any, dict[str, Any]]:
    client: Any = AsyncMongoClient(
        host=o["db_host"],
        port=o["db_port"],
        username=o.get("db_username") or None,
        password=o.get("db_password") or None,
        tls=bool(o.get("db_ssl_enabled")),
        tlsAllowInvalidCertificates=o.get("ssl_verify") is False,
        serverSelectionTimeoutMS=int(wait_s * 1000),
        connectTimeoutMS=int(wait_s * 1000),
        socketTimeoutMS=int(wait_s * 1000),
    )
    try:
        db = client[o.get("db_name") or "admin"]
        try:
            info = await db.command("ping")
        except merr.OperationFailure as exc:
            kind = "auth_failed" if exc.code in (13, 18) else "connect_error"
            raise DbError(kind, str(exc)) from None
        except merr.ServerSelectionTimeoutError as exc:
            text = str(exc).lower()
            kind = "connect_refused" if "refused" in text else "connect_timeout"
            raise DbError(kind, str(exc)[:500]) from None
        except merr.PyMongoError as exc:
            raise DbError("connect_error", str(exc)[:500]) from None
        details: dict[str, Any] = {"ok": info.get("ok")}
        query = (o.get("db_query") or "").strip()
        if not query:
            return None, details
        problem = readonly_problem("mongodb", query)
        if problem is not None:
            raise DbError("read_only_violation", problem)
        spec = json.loads(query)
        try:
            if "command" in spec:
                answer = await db.command(spec["command"])
                value = next((v for k, v in answer.items() if k != "ok"), answer.get("ok"))
            elif spec.get("op") == "count":
                value = await db[spec["collection"]].count_documents(spec.get("filter") or {})
            else:
                doc = await db[spec["collection"]].find_one(spec.get("filter") or {})
                field = spec.get("field")
                value = (
                    None
                    if doc is None
                    else (doc.get(field) if field else json.dumps(doc, default=str))
                )
        except merr.OperationFailure as exc:
            raise DbError("query_error", str(exc)[:500]) from None
        return value, details
    finally:
        with contextlib.suppress(Exception):
            await client.close()


_CLIENTS: dict[str, Callable[[dict[str, Any], float], Awaitable[tuple[Any, dict[str, Any]]]]] = {
    "postgresql": _postgresql,
    "mysql": _mysql,
    "mariadb": _mysql,
    "redis": _redis,
    "mongodb": _mongodb,
}


async def database_probe(check: Check) -> ProbeOutcome:
    o = check.options
    db_type = str(o.get("db_type") or "")
    client = _CLIENTS.get(db_type)
    if client is None:
        return ProbeOutcome.down("invalid_config", f"unknown db_type {db_type!r}")
    o = {**o, "db_port": o.get("db_port") or DEFAULT_PORTS[db_type]}
    query = (o.get("db_query") or "").strip()
    problem = readonly_problem(db_type, query)
    if problem is not None:
        return ProbeOutcome.down("read_only_violation", f"db_query {problem}")
    start = time.perf_counter()
    details: dict[str, Any] = {"db_type": db_type}
    try:
        value, more = await client(o, max(0.5, check.timeout * 0.9))
    except DbError as exc:
        return ProbeOutcome(
            Status.DOWN,
            exc.kind,
            str(exc)[:500],
            latency_ms=(time.perf_counter() - start) * 1e3,
            details=details,
        )
    latency_ms = (time.perf_counter() - start) * 1e3
    details.update(more)
    expected = str(o.get("db_expected_result") or "")
    if query:
        shown = "NULL" if value is None else str(value)
        details["result"] = shown[:MAX_SHOWN]
        if expected:
            ok, shown = matches(expected, value)
            if not ok:
                return ProbeOutcome(
                    Status.DOWN,
                    "result_mismatch",
                    f"got {shown[:MAX_SHOWN]!r}, expected {expected!r}",
                    latency_ms=latency_ms,
                    details=details,
                )
    return ProbeOutcome(Status.UP, latency_ms=latency_ms, details=details)


default_registry.register("database", database_probe)
