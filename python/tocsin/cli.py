"""The `tocsin` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from tocsin import __name__ as _pkg


def _run(coro_factory: object) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro_factory)  # type: ignore[arg-type]
    else:
        uvloop.run(coro_factory)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tocsin", description="uptime and incident platform")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the API server and the engine")
    p_serve.add_argument("--data-dir", type=Path, default=Path("data"), help="default: ./data")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8080)
    p_serve.add_argument(
        "--database",
        default=os.environ.get("TOCSIN_DATABASE"),
        help="sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/NAME"
        " (default: $TOCSIN_DATABASE, else DATA_DIR/tocsin.db)",
    )
    p_serve.add_argument(
        "--max-in-flight", type=int, default=10_000, help="probes running at once (default 10000)"
    )
    p_serve.add_argument(
        "--max-per-host", type=int, default=1_000, help="probes per target host (default 1000)"
    )
    p_serve.add_argument(
        "--probe-threads", type=int, default=0, help="native probe threads (default: one per core)"
    )
    p_serve.add_argument(
        "--extra-ca-file", type=Path, default=None, help="PEM file of extra trusted CAs"
    )
    p_serve.add_argument(
        "--operational-metrics-token",
        default=os.environ.get("TOCSIN_OPERATIONAL_METRICS_TOKEN"),
        help="serve the server's own metrics at GET /metrics to this bearer token"
        " (default: $TOCSIN_OPERATIONAL_METRICS_TOKEN; off when unset)",
    )

    mail = p_serve.add_argument_group(
        "mail", "the server's own mails: status page subscribers (docs/subscriptions.md)"
    )
    mail.add_argument(
        "--smtp-url",
        default=os.environ.get("TOCSIN_SMTP_URL"),
        metavar="URL",
        help="smtp://[USER[:PASSWORD]@]HOST[:PORT] (STARTTLS if offered; ?starttls=1 requires"
        " it, ?starttls=0 never), smtps://… (implicit TLS), ?tls_verify=0"
        " (default: $TOCSIN_SMTP_URL, else no mails)",
    )
    mail.add_argument(
        "--smtp-from",
        default=os.environ.get("TOCSIN_SMTP_FROM"),
        metavar="ADDRESS",
        help="the sender of the server's mails (default: $TOCSIN_SMTP_FROM, else tocsin@HOST)",
    )
    mail.add_argument(
        "--public-url",
        default=os.environ.get("TOCSIN_PUBLIC_URL"),
        metavar="URL",
        help="the server's address as people reach it, the base of links in mails"
        " (default: $TOCSIN_PUBLIC_URL, else http://HOST:PORT)",
    )

    from tocsin import http_limits as hl

    http = p_serve.add_argument_group(
        "connections", "limits of the HTTP server (docs/limits.md, section Connections)"
    )
    http.add_argument(
        "--max-header-size",
        type=int,
        default=hl.DEFAULT_MAX_HEADER_BYTES,
        metavar="BYTES",
        help="request line and headers, in bytes; larger: 431 (default 65536)",
    )
    http.add_argument(
        "--max-headers",
        type=int,
        default=hl.DEFAULT_MAX_HEADERS,
        metavar="N",
        help="header fields per request; more: 431 (default 100)",
    )
    http.add_argument(
        "--header-timeout",
        type=float,
        default=hl.DEFAULT_HEADER_TIMEOUT,
        metavar="SECONDS",
        help="for a request line and headers to arrive, from the connection's opening or"
        " the end of the previous response; then 408 and close (default 10)",
    )
    http.add_argument(
        "--body-timeout",
        type=float,
        default=hl.DEFAULT_BODY_TIMEOUT,
        metavar="SECONDS",
        help="a request body that makes no progress this long: 408 and close (default 30)",
    )
    http.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=hl.DEFAULT_KEEP_ALIVE_TIMEOUT,
        metavar="SECONDS",
        help="an idle connection between requests is closed after it (default 5)",
    )
    http.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="open connections; past it a new one gets 503 and is closed"
        f" (default: the open-files limit, raised to its hard limit, minus {hl.FD_RESERVE})",
    )
    http.add_argument(
        "--forwarded-allow-ips",
        default=os.environ.get("TOCSIN_FORWARDED_ALLOW_IPS", ""),
        metavar="LIST",
        help="comma-separated addresses or networks (CIDR) of reverse proxies whose"
        " X-Forwarded-For and X-Forwarded-Proto are believed, or * for any peer"
        " (default: $TOCSIN_FORWARDED_ALLOW_IPS, else none)",
    )

    for flag, default, what in (
        ("--keep-raw-days", 14, "raw results"),
        ("--keep-minute-days", 30, "minute rollups"),
        ("--keep-hour-days", 365, "hour rollups"),
        ("--keep-day-days", 0, "day rollups"),
    ):
        p_serve.add_argument(
            flag, type=int, default=default, help=f"days of {what} kept (0 = forever; {default})"
        )

    p_db = sub.add_parser("db", help="database maintenance")
    db_sub = p_db.add_subparsers(dest="db_command", required=True)
    p_upgrade = db_sub.add_parser("upgrade", help="apply pending migrations and exit")
    p_upgrade.add_argument("--data-dir", type=Path, default=Path("data"), help="default: ./data")
    p_upgrade.add_argument(
        "--database",
        default=os.environ.get("TOCSIN_DATABASE"),
        help="as for serve (default: $TOCSIN_DATABASE, else DATA_DIR/tocsin.db)",
    )

    p_agent = sub.add_parser("agent", help="probe from here for a central server")
    p_agent.add_argument("--server", required=True, help="the server's URL, e.g. https://…")
    p_agent.add_argument(
        "--token",
        default=os.environ.get("TOCSIN_AGENT_TOKEN"),
        help="one-time registration token reg_… (first start only; $TOCSIN_AGENT_TOKEN)",
    )
    p_agent.add_argument("--location", default=None, help="geo location code, e.g. EU-PL")
    p_agent.add_argument("--name", default=None, help="default: the host name")
    p_agent.add_argument(
        "--data-dir", type=Path, default=Path("agent-data"), help="default: ./agent-data"
    )
    p_agent.add_argument(
        "--flush-interval", type=float, default=0.2, help="seconds between result batches"
    )
    p_agent.add_argument(
        "--keep-sent", action="store_true", help="keep acknowledged batches in DATA_DIR/sent"
    )
    p_agent.add_argument(
        "--spool-max-mb",
        type=int,
        default=256,
        help="disk kept for unacknowledged batches (default 256 MiB)",
    )

    sub.add_parser("version", help="print the version")

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    if args.command == "version":
        from importlib.metadata import version

        print(version(_pkg))
        return 0

    if args.command == "agent":
        from tocsin.agent.runner import Agent, main_sync

        if not 0.01 <= args.flush_interval <= 60:
            parser.error("--flush-interval must be 0.01 to 60 seconds")
        if not 1 <= args.spool_max_mb <= 1 << 20:
            parser.error("--spool-max-mb must be 1 to 1048576")
        return main_sync(
            Agent(
                server=args.server,
                data_dir=args.data_dir,
                token=args.token,
                name=args.name,
                location=args.location,
                flush_interval=args.flush_interval,
                keep_sent=args.keep_sent,
                spool_bytes=args.spool_max_mb << 20,
            )
        )

    from tocsin.encryption import SecretKeyError
    from tocsin.notify.subscribers import SmtpSettings, parse_public_url
    from tocsin.server import serve
    from tocsin.store import (
        DatabaseTooNewError,
        Retention,
        StoreUnavailableError,
        UnsupportedDatabaseError,
    )

    refusals = (
        ValueError,
        UnsupportedDatabaseError,
        DatabaseTooNewError,
        StoreUnavailableError,
        SecretKeyError,
        OSError,
    )
    if args.command == "db":
        try:
            _run(db_upgrade(args.database, args.data_dir))
        except refusals as exc:
            print(f"tocsin: {exc}", file=sys.stderr)
            return 2
        return 0

    if args.max_in_flight < 1 or args.max_per_host < 1 or args.probe_threads < 0:
        parser.error("--max-in-flight and --max-per-host must be >= 1, --probe-threads >= 0")
    for tier in ("raw", "minute", "hour", "day"):
        if getattr(args, f"keep_{tier}_days") < 0:
            # A negative age would put the cutoff in the future and delete everything.
            parser.error(f"--keep-{tier}-days must be >= 0 (0 keeps forever)")
    try:
        connection_limits = hl.ConnectionLimits(
            max_header_bytes=args.max_header_size,
            max_headers=args.max_headers,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
            max_connections=args.max_connections,
        )
        forwarded_allow_ips = hl.parse_forwarded_allow_ips(args.forwarded_allow_ips)
        smtp = SmtpSettings.parse(args.smtp_url, args.smtp_from) if args.smtp_url else None
        public_url = parse_public_url(args.public_url) if args.public_url else None
    except ValueError as exc:
        parser.error(str(exc))
    # Before anything opens a descriptor, and before the default --max-connections is
    # derived from it.
    hl.raise_open_files_limit()
    try:
        extra_ca = args.extra_ca_file.read_text() if args.extra_ca_file else None
        engine_options = {
            "max_in_flight": args.max_in_flight,
            "max_per_host": args.max_per_host,
            "threads": args.probe_threads,
            "extra_ca_pem": extra_ca,
        }
        _run(
            serve(
                data_dir=args.data_dir,
                host=args.host,
                port=args.port,
                database=args.database,
                engine_options=engine_options,
                retention=Retention(
                    raw_days=args.keep_raw_days or None,
                    minute_days=args.keep_minute_days or None,
                    hour_days=args.keep_hour_days or None,
                    day_days=args.keep_day_days or None,
                ),
                connection_limits=connection_limits,
                forwarded_allow_ips=forwarded_allow_ips,
                operational_metrics_token=args.operational_metrics_token,
                smtp=smtp,
                public_url=public_url,
            )
        )
    except refusals as exc:
        print(f"tocsin: {exc}", file=sys.stderr)
        return 2
    return 0


async def db_upgrade(database: str | None, data_dir: Path) -> None:
    """`tocsin db upgrade`: apply pending migrations and say what changed."""
    from tocsin.store import open_store

    store = open_store(database, data_dir)
    await store.open(migrate=False)
    try:
        before = await store.schema_version()
    finally:
        await store.close()
    await store.open()
    try:
        after = await store.schema_version()
    finally:
        await store.close()
    if after == before:
        print(f"{store.backend} database is up to date (schema version {after})")
    else:
        print(f"{store.backend} database upgraded from schema version {before} to {after}")


if __name__ == "__main__":
    sys.exit(main())
