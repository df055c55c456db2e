"""The `tocsin` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
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
        "--database", default=None, help="sqlite:///PATH (default: DATA_DIR/tocsin.db)"
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

    from tocsin.server import serve
    from tocsin.store import DatabaseTooNewError, UnsupportedDatabaseError

    try:
        _run(serve(data_dir=args.data_dir, host=args.host, port=args.port, database=args.database))
    except (UnsupportedDatabaseError, DatabaseTooNewError, OSError) as exc:
        print(f"tocsin: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
