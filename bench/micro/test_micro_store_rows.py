"""Micro-benchmarks of what the store and the API do to values before SQL sees them:
the store's result rows (`tocsin.store.sql.checks._result_row`, per result of an engine
batch) and the JSON body parser every API body goes through
(`tocsin.api.limits.parse_json`). Each benchmark checks what it got back.

    .venv/bin/python -m pytest bench/micro --benchmark-only
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from tocsin.api.limits import MAX_BODY, parse_json
from tocsin.models import Result, Status, Timings
from tocsin.store.sql.checks import _result_row
from tocsin.store.tables import RESULT_COLUMNS

N = 5_000
NOW = time.time()


def _results(n: int = N) -> list[Result]:
    """An engine batch: HTTP runs with timings, failures with messages (1 in 50 with a
    NUL, which the store turns into U+FFFD), a few with details; fixed seed."""
    rnd = random.Random(16)
    out = []
    for i in range(n):
        started = NOW - 60 + i * 0.01
        down = rnd.random() < 0.1
        message = None
        if down:
            message = "reset by peer\x00" if i % 50 == 0 else f"reset by 192.0.2.{i % 250}"
        out.append(
            Result(
                check_id=1 + i % 1_000,
                status=Status.DOWN if down else Status.UP,
                started_at=started,
                latency_ms=round(rnd.uniform(5, 300), 3),
                due_at=started - 0.002,
                error_kind="connection" if down else None,
                message=message,
                status_code=None if down else 200,
                timings=Timings(0.4, 1.2, 3.5, 20.0),
                details_json='{"bytes": 512}' if i % 10 == 0 else None,
            )
        )
    return out


RESULTS = _results()
# check -> organisation, as `write_batch` looks it up before building the rows.
ORG_OF = {r.check_id: 1 + r.check_id % 4 for r in RESULTS}


@pytest.mark.benchmark(group="store rows", min_rounds=20)
def test_result_rows(benchmark: Any) -> None:
    """5,000 results to the rows `write_batch` inserts (`RESULT_COLUMNS` order)."""
    rows = benchmark(lambda: [_result_row(r, ORG_OF[r.check_id]) for r in RESULTS])
    assert len(rows) == N
    message_at = RESULT_COLUMNS.index("message")
    for row, r in zip(rows, RESULTS, strict=True):
        assert len(row) == len(RESULT_COLUMNS)
        assert row[:4] == (r.check_id, ORG_OF[r.check_id], "central", r.started_at)
        expected = r.message.replace("\x00", "\ufffd") if r.message else None
        assert row[message_at] == expected
    assert sum("\ufffd" in (row[message_at] or "") for row in rows) > 0


def _check_body(i: int) -> dict[str, Any]:
    """A `POST /api/checks` body as a client sends it."""
    return {
        "name": f"shop checkout {i}",
        "type": "uptime",
        "url": f"https://shop.example.com/checkout/{i}?probe=1",
        "interval": 60,
        "timeout": 10,
        "alert_after_failures": 2,
        "tags": ["shop", "eu", "payments"],
        "config": {
            "method": "GET",
            "expected_status_codes": [200, 204],
            "follow_redirects": True,
            "http_headers": {"Accept": "text/html", "X-Probe": "tocsin"},
            "keyword": "Checkout",
        },
    }


SMALL = json.dumps(_check_body(1)).encode()


def _large(target: int = 500 * 1024) -> dict[str, Any]:
    """A ~500 KB body: a check whose settings hold many small objects (the shape of a
    large free-form `config`), under the API's 1 MiB cap."""
    body = _check_body(0)
    entries: list[dict[str, Any]] = []
    body["config"]["entries"] = entries
    size = len(json.dumps(body))
    i = 0
    while size < target:
        entry = {"path": f"/api/v1/items/{i}", "expect": [200, 201], "label": f"item {i}"}
        size += len(json.dumps(entry)) + (2 if entries else 0)  # ", " between entries
        entries.append(entry)
        i += 1
    return body


LARGE_DOC = _large()
LARGE = json.dumps(LARGE_DOC).encode()
# The same document with one emoji, as Python's json.dumps writes it by default
# (ensure_ascii): the emoji becomes a \ud83d\ude00 surrogate-pair escape.
_doc = {**LARGE_DOC, "description": "checkout \N{GRINNING FACE}"}
LARGE_ESCAPED = json.dumps(_doc).encode()
assert 500 * 1024 <= len(LARGE) < len(LARGE_ESCAPED) < MAX_BODY
assert b"\\ud83d" in LARGE_ESCAPED


@pytest.mark.benchmark(group="parse_json", min_rounds=20)
def test_parse_json_small_check_body(benchmark: Any) -> None:
    doc = benchmark(parse_json, SMALL)
    assert doc == _check_body(1)


@pytest.mark.benchmark(group="parse_json", min_rounds=20)
def test_parse_json_500kb(benchmark: Any) -> None:
    """No \\u escape in the body: only the depth of the containers is walked."""
    doc = benchmark(parse_json, LARGE)
    assert doc == LARGE_DOC


@pytest.mark.benchmark(group="parse_json", min_rounds=20)
def test_parse_json_500kb_escaped(benchmark: Any) -> None:
    """One surrogate-pair escape anywhere in the body: every string and key is checked."""
    doc = benchmark(parse_json, LARGE_ESCAPED)
    assert doc["description"] == "checkout \N{GRINNING FACE}"
    assert doc["config"]["entries"] == LARGE_DOC["config"]["entries"]
