"""Hostile input around identity and search, on both backends: forged or odd session
subjects are an ordinary 401, `_`, `%` and `\\` in a search match only themselves; and
the SQLite database files are readable by the server's account only."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from helpers import Server, api, server_store
from tocsin.security import password_stamp


@pytest.fixture
def server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_args: tuple[str, ...]
) -> Iterator[Server]:
    # Many refused requests from one address in a row: not what the rate limits test.
    monkeypatch.setenv("TOCSIN_RATE_LIMIT_PER_TOKEN", "0")
    monkeypatch.setenv("TOCSIN_RATE_LIMIT_PER_ADDRESS", "0")
    s = Server(tmp_path / "data")
    s.start(*database_args)
    yield s
    s.kill()


async def admin_stamp(server: Server) -> str:
    store = server_store(server)
    await store.open(migrate=False)
    try:
        password_hash = await store.password_hash(1)
    finally:
        await store.close()
    assert password_hash is not None
    return password_stamp(password_hash)


def session(server: Server, **claims: Any) -> str:
    """A session signed with the server's own key: only the claims are odd."""
    key = (server.data_dir / "jwt.key").read_bytes()
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 600, **claims}, key, algorithm="HS256")


@pytest.mark.both_backends
async def test_a_session_with_an_odd_subject_is_an_ordinary_401(
    server: Server, http: aiohttp.ClientSession
) -> None:
    stamp = await admin_stamp(server)
    # The same session for user 1 works: only the subject is at fault below.
    code, me = await api(
        http, server, "GET", "/api/users/me", token=session(server, sub="1", pwd=stamp)
    )
    assert code == 200 and me["id"] == 1
    for sub in (
        str(2**64),
        str(2**63),
        str(10**40),
        str(2**63 - 1),  # in range, but nobody
        "-1",
        "0",
        "01",
        "+1",
        " 1",
        "1 ",
        "1\n",
        "1_0",
        "1.0",
        "\u0661",  # ARABIC-INDIC DIGIT ONE
        "abc",
        "",
        1,
        -1,
        2**70,
        1.5,
        1e300,
        True,
        None,
        [1],
        {"id": 1},
    ):
        token = session(server, sub=sub, pwd=stamp)
        for headers in ({"Authorization": f"Bearer {token}"}, {"Cookie": f"access_token={token}"}):
            async with http.get(server.base + "/api/users/me", headers=headers) as resp:
                assert resp.status == 401, (sub, headers, await resp.text())
                assert (await resp.json())["detail"] == "Invalid or expired session"
    # Odd other claims too.
    for claims in (
        {"sub": "1", "pwd": 5},
        {"sub": "1", "pwd": None},
        {"sub": "1", "pwd": [stamp]},
        {"sub": "1", "pwd": stamp, "exp": 10**30},
        {"sub": "1", "pwd": stamp, "iat": "yesterday"},
    ):
        code, body = await api(
            http, server, "GET", "/api/users/me", token=session(server, **claims)
        )
        assert code == 401, (claims, body)
    # The server is fine afterwards.
    assert (await api(http, server, "GET", "/api/users/me"))[0] == 200


@pytest.mark.both_backends
async def test_wildcards_in_a_search_match_only_themselves(
    server: Server, http: aiohttp.ClientSession
) -> None:
    ids = {}
    for name in ("abc", "a_c", "aXc", "a%c", "50% off", "a\\c"):
        code, check = await api(
            http,
            server,
            "POST",
            "/api/checks/",
            json={"name": name, "url": "http://127.0.0.1:9/", "interval": 3600, "is_active": False},
        )
        assert code == 200, check
        ids[name] = check["id"]

    async def found(query: str) -> list[str]:
        code, body = await api(http, server, "GET", "/api/checks/", params={"q": query})
        assert code == 200, body
        code, alias = await api(http, server, "GET", "/api/checks/", params={"search": query})
        assert code == 200 and alias == body
        return sorted(c["name"] for c in body)

    assert await found("a_c") == ["a_c"]
    assert await found("A_C") == ["a_c"]
    assert await found("_") == ["a_c"]
    assert await found("a%c") == ["a%c"]
    assert await found("%") == ["50% off", "a%c"]
    assert await found("0% o") == ["50% off"]
    assert await found("a\\c") == ["a\\c"]
    assert await found("\\") == ["a\\c"]
    assert await found("a\\_c") == []
    assert await found("a\\%c") == []
    assert await found("abc") == ["abc"]
    assert await found("c") == sorted({*ids} - {"50% off"})
    assert await found("") == sorted(ids)


def test_the_database_files_are_private_after_a_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    s = Server(data)
    s.start()
    try:
        db = data / "tocsin.db"
        files = [db, data / "tocsin.db-wal", data / "tocsin.db-shm"]
        for f in files:
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    finally:
        s.kill()  # not a clean stop: the WAL files stay behind
    # A database left readable by everyone (an older tocsin, a restored backup) is
    # tightened at the next start, with the WAL files it left.
    for f in files:
        f.chmod(0o644)
    s.start()
    try:
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        s.kill()
