"""Remote agents with real processes: `tocsin serve` and `tocsin agent` children talking
over loopback and over a veth pair into a network namespace the test creates (an agent
inside it cannot reach the host's 127.0.0.1 target). Kills (-9) of an agent and of the
server in the middle of a run lose and duplicate nothing: every batch an agent spooled
is compared with what the server stored."""

from __future__ import annotations

import asyncio
import collections
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import web

from helpers import (
    Server,
    api,
    free_port,
    is_event,
    other_org_user,
    stream_opener,
    wait_for,
)
from tocsin.agent import wire
from tocsin.security import hash_token
from tocsin.store import open_store

ENV = {"TOCSIN_AGENT_HEARTBEAT_INTERVAL": "1", "TOCSIN_RATE_LIMIT_PER_ADDRESS": "0"}


# -- processes --------------------------------------------------------------------------


class AgentProc:
    """`tocsin agent` as a child process (optionally inside a network namespace)."""

    def __init__(self, root: Path, name: str, server: Server, *, netns: str | None = None) -> None:
        self.name = name
        self.data_dir = root / name
        self.server = server
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / f"{name}.log"

    def start(self, token: str | None = None, *extra: str) -> None:
        cmd = [sys.executable, "-m", "tocsin.cli", "agent", "--server", self.server.base]
        cmd += ["--data-dir", str(self.data_dir), "--name", self.name, "--keep-sent"]
        if token:
            cmd += ["--token", token]
        cmd += list(extra)
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    @property
    def credential(self) -> str:
        return str(json.loads((self.data_dir / "agent.json").read_text())["credential"])

    @property
    def agent_id(self) -> int:
        return int(json.loads((self.data_dir / "agent.json").read_text())["agent_id"])

    def produced(self) -> tuple[collections.Counter[tuple[int, float]], int]:
        """Every result in a batch this agent spooled (sent or not): (check, start)
        counts, and how many batches are still unsent."""
        rows: collections.Counter[tuple[int, float]] = collections.Counter()
        unsent = list((self.data_dir / "spool").glob("*.batch"))
        for path in [*(self.data_dir / "sent").glob("*.batch"), *unsent]:
            for r in msgpack.unpackb(path.read_bytes())["results"]:
                rows[(r[0], round(r[2], 6))] += 1
        return rows, len(unsent)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


class NetNs:
    """A network namespace joined to the host by a veth pair on a private /30."""

    def __init__(self) -> None:
        if shutil.which("ip") is None:
            pytest.fail("the `ip` tool (iproute2) is needed for the namespace test")
        tag = secrets.token_hex(3)
        self.name = f"tocsin-{tag}"
        self.host_if, self.ns_if = f"vh{tag}", f"vn{tag}"
        octet = int(tag[:2], 16) % 250 + 2
        self.host_ip, self.ns_ip = f"10.251.{octet}.1", f"10.251.{octet}.2"
        self._made = False

    def _ip(self, *args: str, ns: bool = False) -> None:
        cmd = ["ip", "netns", "exec", self.name, "ip", *args] if ns else ["ip", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed (tests need root): {done.stderr.strip()}")

    def create(self) -> None:
        self._ip("netns", "add", self.name)
        self._made = True
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self._ip("link", "set", self.ns_if, "netns", self.name)
        self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        self._ip("link", "set", self.host_if, "up")
        self._ip("addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if, ns=True)
        self._ip("link", "set", self.ns_if, "up", ns=True)
        self._ip("link", "set", "lo", "up", ns=True)

    def close(self) -> None:
        if self._made:
            subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


class Site:
    """A real HTTP target answering 200 on one address."""

    def __init__(self, host: str) -> None:
        self.host, self.port = host, free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._root)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def netns() -> Iterator[NetNs]:
    ns = NetNs()
    try:
        ns.create()
        yield ns
    finally:
        ns.close()


async def reg_token(http: aiohttp.ClientSession, server: Server, **body: Any) -> str:
    code, answer = await api(http, server, "POST", "/api/organizations/1/agent-tokens", json=body)
    assert code == 201, answer
    assert answer["token"].startswith("reg_")
    return str(answer["token"])


async def agent_row(http: aiohttp.ClientSession, server: Server, agent_id: int) -> Any:
    code, row = await api(http, server, "GET", f"/api/agents/{agent_id}")
    assert code == 200, row
    return row


async def check(http: aiohttp.ClientSession, server: Server, check_id: int) -> Any:
    code, row = await api(http, server, "GET", f"/api/checks/{check_id}")
    assert code == 200, row
    return row


async def stored_results(server: Server, check_ids: list[int]) -> dict[str, Any]:
    """What the server stored: per source, (check, start) counts."""
    store = open_store(None, server.data_dir)
    await store.open(migrate=False)
    try:
        out: dict[str, collections.Counter[tuple[int, float]]] = collections.defaultdict(
            collections.Counter
        )
        for cid in check_ids:
            for r in await store.source_results([1], cid, 0.0):
                out[r["source"]][(cid, round(r["started_at"], 6))] += 1
        return out
    finally:
        await store.close()


# -- the fleet --------------------------------------------------------------------------


async def test_fleet_of_agents_through_kills_stores_every_result_exactly_once(
    tmp_path: Path, agent_env: None, netns: NetNs
) -> None:
    # Bound to the host end of the veth pair, so agents inside the namespace reach it too.
    server = Server(tmp_path / "data", host=netns.host_ip)
    server.start()
    local = Site("127.0.0.1")  # unreachable from inside the namespace
    shared = Site(netns.host_ip)  # reachable from everywhere
    agents: list[AgentProc] = []
    try:
        await local.start()
        await shared.start()
        async with aiohttp.ClientSession() as http:
            p1 = AgentProc(tmp_path, "private-1", server)
            p2 = AgentProc(tmp_path, "private-2", server, netns=netns.name)
            geo = AgentProc(tmp_path, "geo-pl", server)
            agents += [p1, p2, geo]
            p1.start(await reg_token(http, server, name="p1"))
            p2.start(await reg_token(http, server, name="p2"))
            geo.start(await reg_token(http, server, name="geo"), "--location", "EU-PL")

            async def registered() -> bool:
                return all((a.data_dir / "agent.json").exists() for a in agents)

            await wait_for(registered, timeout=30)
            assert (p1.data_dir / "agent.json").stat().st_mode & 0o777 == 0o600
            ids = {a.name: a.agent_id for a in agents}
            code, listed = await api(http, server, "GET", "/api/agents/")
            assert code == 200
            assert {a["source"] for a in listed} == {
                f"agent:{ids['private-1']}",
                f"agent:{ids['private-2']}",
                "geo:EU-PL",
            }
            code, locations = await api(http, server, "GET", "/api/agents/geo-locations")
            assert code == 200 and [g["code"] for g in locations] == ["EU-PL"], locations

            two = [ids["private-1"], ids["private-2"]]
            s1, s2 = (f"agent:{i}" for i in two)
            body = {"type": "uptime", "interval": 1, "timeout": 2}
            _, split = await api(
                http,
                server,
                "POST",
                "/api/checks",
                json={**body, "name": "split", "url": local.url, "assigned_agent_ids": two},
            )
            _, everywhere = await api(
                http,
                server,
                "POST",
                "/api/checks",
                json={
                    **body,
                    "name": "everywhere",
                    "url": shared.url,
                    "assigned_agent_ids": two,
                    "geo_monitoring_enabled": True,
                },
            )
            _, central = await api(
                http,
                server,
                "POST",
                "/api/checks",
                json={**body, "name": "central", "url": local.url},
            )
            # Geo only, every 20 s: its sources would go stale on their own only after
            # a minute of silence.
            _, slow = await api(
                http,
                server,
                "POST",
                "/api/checks",
                json={
                    **body,
                    "name": "slow",
                    "url": shared.url,
                    "interval": 20,
                    "geo_monitoring_enabled": True,
                },
            )

            # One agent cannot reach the target: that source is DOWN, the check DEGRADED.
            async def split_degraded() -> Any:
                row = await check(http, server, split["id"])
                ok = row["agent_location_statuses"] == {s1: "UP", s2: "DOWN"}
                return ok and row["status"] == "DEGRADED" and row

            await wait_for(split_degraded, timeout=60)

            async def everywhere_up() -> Any:
                row = await check(http, server, everywhere["id"])
                want = {s1: "UP", s2: "UP", "geo:EU-PL": "UP"}
                return row["agent_location_statuses"] == want and row["status"] == "UP"

            await wait_for(everywhere_up, timeout=60)

            async def slow_up() -> bool:
                row = await check(http, server, slow["id"])
                return row["agent_location_statuses"] == {"geo:EU-PL": "UP"}

            await wait_for(slow_up, timeout=45)
            # A critical source that fails sets the check DOWN whatever the others say.
            code, _ = await api(
                http,
                server,
                "PATCH",
                f"/api/checks/{split['id']}",
                json={"check_source_critical": {s2: True}},
            )
            assert code == 200

            async def split_down() -> bool:
                return (await check(http, server, split["id"]))["status"] == "DOWN"

            await wait_for(split_down, timeout=15)

            # Mid-run: kill -9 an agent and the server, restart both.
            await asyncio.sleep(1.5)
            p1.kill()
            await asyncio.sleep(1.0)
            p1.start()
            await asyncio.sleep(1.5)
            server.kill()
            await asyncio.sleep(1.5)
            server.start()
            await asyncio.sleep(3.0)

            # A silent agent goes offline (agent.status) and its source turns UNKNOWN,
            # not DOWN; the check's verdict follows the fresh sources.
            # After the restart the server knows a source once it has reported again.
            await wait_for(slow_up, timeout=45)
            async with stream_opener(http)(server) as events:
                geo.kill()
                await events.wait(is_event("agent.status", status="offline", source="geo:EU-PL"))

                async def geo_unknown() -> bool:
                    row = await check(http, server, everywhere["id"])
                    statuses = row["agent_location_statuses"]
                    return statuses.get("geo:EU-PL") == "UNKNOWN" and row["status"] == "UP"

                await wait_for(geo_unknown, timeout=20)

                # Offline makes the source stale at once, not after three intervals (a
                # minute here, as its last result may be 20 s old).
                async def slow_unknown() -> bool:
                    row = await check(http, server, slow["id"])
                    statuses = row["agent_location_statuses"]
                    return statuses == {"geo:EU-PL": "UNKNOWN"} and row["status"] == "UNKNOWN"

                await wait_for(slow_unknown, timeout=10)
                assert (await agent_row(http, server, ids["geo-pl"]))["status"] == "offline"
                geo.start()  # back, and it sends what it had spooled
                await events.wait_new(is_event("agent.status", status="online", source="geo:EU-PL"))

            # The central check is probed centrally; agent checks never are.
            code, summary = await api(
                http, server, "GET", f"/api/agents/checks/{everywhere['id']}/geo-summary"
            )
            assert code == 200
            assert set(summary["sources"]) == {s1, s2, "geo:EU-PL"}
            assert summary["sources"][s2]["uptime_pct"] == 100.0
            assert summary["sources"][s1]["latency_p99_ms"] is not None
            code, series = await api(
                http,
                server,
                "GET",
                f"/api/agents/checks/{split['id']}/geo-timeseries?window=3600&bucket=60",
            )
            assert code == 200 and series["bucket_seconds"] == 60
            assert {p["status"] for p in series["sources"][s2]} == {"DOWN"}
            assert {p["status"] for p in series["sources"][s1]} == {"UP"}

            for a in agents:
                assert a.stop() == 0, a.log.read_text()[-2000:]
            stored = await stored_results(
                server, [split["id"], everywhere["id"], central["id"], slow["id"]]
            )
            assert set(stored) == {s1, s2, "geo:EU-PL", "central"}
            assert {cid for cid, _ in stored["central"]} == {central["id"]}
            for a, source in ((p1, s1), (p2, s2), (geo, "geo:EU-PL")):
                produced, unsent = a.produced()
                assert unsent == 0, f"{a.name} kept {unsent} batches"
                assert produced, a.name
                assert max(produced.values()) == 1, f"{a.name} produced a result twice"
                assert max(stored[source].values()) == 1, f"{source} stored twice"
                missing = produced - stored[source]
                extra = stored[source] - produced
                assert not missing and not extra, (a.name, len(missing), len(extra))
    finally:
        for a in agents:
            a.cleanup()
        server.kill()
        await local.stop()
        await shared.stop()


# -- credentials, tampering, isolation --------------------------------------------------


@pytest.fixture
async def agent_server(tmp_path: Path, agent_env: None) -> AsyncIterator[Server]:
    s = Server(tmp_path / "data")
    s.start()
    yield s
    s.kill()


async def test_agent_credentials_are_scoped_signed_and_revocable(
    tmp_path: Path, agent_server: Server, http: aiohttp.ClientSession
) -> None:
    server = agent_server
    target = Site("127.0.0.1")
    await target.start()
    agent = AgentProc(tmp_path, "solo", server)
    try:
        token = await reg_token(http, server, name="solo")
        # Tokens are listed without their secret.
        code, tokens = await api(http, server, "GET", "/api/organizations/1/agent-tokens")
        assert code == 200 and "token" not in tokens[0] and tokens[0]["prefix"] == token[:8]
        agent.start(token)
        await wait_for(lambda: _exists(agent.data_dir / "agent.json"), timeout=30)
        aid = agent.agent_id
        # The token was single-use.
        async with http.post(f"{server.base}/api/agents/register", json={"token": token}) as r:
            assert r.status == 401
        _, chk = await api(
            http,
            server,
            "POST",
            "/api/checks",
            json={
                "type": "uptime",
                "name": "t",
                "url": target.url,
                "interval": 1,
                "assigned_agent_ids": [aid],
            },
        )

        async def has_results() -> bool:
            _, logs = await api(http, server, "GET", f"/api/checks/{chk['id']}/logs")
            return bool(logs) and {x["source"] for x in logs} == {f"agent:{aid}"}

        await wait_for(has_results, timeout=30)
        code, _ = await api(http, server, "POST", f"/api/checks/{chk['id']}/run-now")
        assert code == 409
        cred = agent.credential
        auth = {"Authorization": f"Bearer {cred}"}
        # Agent credentials do not reach user routes, user tokens not agent routes.
        async with http.get(f"{server.base}/api/checks", headers=auth) as r:
            assert r.status == 401
        async with http.get(f"{server.base}/api/agents/checks", headers=server.headers) as r:
            assert r.status == 401
        # The assignment answers 304 while unchanged.
        async with http.get(f"{server.base}/api/agents/checks", headers=auth) as r:
            assert r.status == 200
            etag = r.headers["ETag"]
            assert [c["id"] for c in (await r.json())["checks"]] == [chk["id"]]
        async with http.get(
            f"{server.base}/api/agents/checks", headers={**auth, "If-None-Match": etag}
        ) as r:
            assert r.status == 304

        key = wire.signing_key(hash_token(cred))
        sent = sorted((agent.data_dir / "sent").glob("*.batch"))
        assert sent
        replay = sent[0].read_bytes()

        async def post(body: bytes, signature: str | None) -> tuple[int, Any]:
            headers = {**auth, "Content-Type": wire.MSGPACK}
            if signature is not None:
                headers[wire.SIGNATURE_HEADER] = signature
            async with http.post(
                f"{server.base}/api/agents/results", data=body, headers=headers
            ) as r:
                return r.status, await r.json()

        # A replayed batch is acknowledged and ignored.
        code, answer = await post(replay, wire.sign(key, replay))
        assert code == 200 and answer["duplicate"] is True and answer["accepted"] == 0
        # A tampered batch (or an unsigned one) is refused.
        data = msgpack.unpackb(replay)
        data["seq"] = 10**9
        data["results"][0][1] = "DOWN"
        forged = msgpack.packb(data)
        code, answer = await post(forged, wire.sign(key, replay))
        assert code == 422 and answer["detail"][0]["loc"][1] == wire.SIGNATURE_HEADER
        code, _ = await post(forged, None)
        assert code == 422
        # A well-signed batch with a bad row names it.
        bad = msgpack.packb({"seq": 10**9, "results": [[chk["id"], "SIDEWAYS"] + [None] * 11]})
        code, answer = await post(bad, wire.sign(key, bad))
        assert code == 422 and answer["detail"][0]["loc"] == ["body", "results", 0, 1]
        store = open_store(None, server.data_dir)
        await store.open(migrate=False)
        try:
            row = await store.get("agents", [1], aid)
            assert row is not None and row["last_batch_seq"] < 10**9
        finally:
            await store.close()

        # Another organisation sees none of it.
        other, _other_org = await other_org_user(server)
        code, listed = await api(http, server, "GET", "/api/agents/", token=other)
        assert code == 200 and listed == []
        for method, path in (
            ("GET", f"/api/agents/{aid}"),
            ("DELETE", f"/api/agents/{aid}"),
            ("GET", "/api/organizations/1/agent-tokens"),
            ("POST", "/api/organizations/1/agent-tokens"),
            ("GET", f"/api/agents/checks/{chk['id']}/geo-summary"),
            ("GET", f"/api/agents/checks/{chk['id']}/geo-timeseries"),
        ):
            code, _ = await api(http, server, method, path, token=other, json={})
            assert code == 404, (method, path, code)
        code, answer = await api(
            http,
            server,
            "POST",
            "/api/checks",
            token=other,
            json={"type": "uptime", "name": "x", "url": target.url, "assigned_agent_ids": [aid]},
        )
        assert code == 422 and answer["detail"][0]["loc"] == ["body", "assigned_agent_ids"]

        # A well-signed batch naming a check the agent does not run is refused whole:
        # another organisation's check, one of its own organisation not assigned to it.
        code, foreign = await api(
            http,
            server,
            "POST",
            "/api/checks",
            token=other,
            json={"type": "uptime", "name": "f", "url": target.url, "is_active": False},
        )
        assert code == 200
        code, central = await api(
            http,
            server,
            "POST",
            "/api/checks",
            json={"type": "uptime", "name": "c", "url": target.url, "is_active": False},
        )
        assert code == 200
        store = open_store(None, server.data_dir)
        await store.open(migrate=False)
        try:
            seq = (await store.get("agents", [1], aid) or {})["last_batch_seq"] + 1_000
            t = time.time()
            for cid in (foreign["id"], central["id"]):
                rows = [[chk["id"], "UP", t, 1.0, *[None] * 9], [cid, "DOWN", t, 1.0, *[None] * 9]]
                body = wire.encode(seq, rows)
                code, answer = await post(body, wire.sign(key, body))
                assert code == 422 and answer["detail"][0]["loc"] == ["body", "results"]
                for org, check_id in ((1, chk["id"]), (_other_org, cid)):
                    got = await store.source_results([org], check_id, t - 0.001)
                    assert [r for r in got if r["started_at"] == t] == []
            assert (await store.get("agents", [1], aid) or {})["last_batch_seq"] < seq
        finally:
            await store.close()
        # A sequence number far ahead (it would turn every held batch into a "duplicate").
        body = wire.encode(seq + 10**7, [[chk["id"], "UP", t, 1.0, *[None] * 9]])
        code, answer = await post(body, wire.sign(key, body))
        assert code == 422 and answer["detail"][0]["loc"] == ["body", "seq"]
        # Signature headers with non-ASCII characters, malformed bodies, a body too large:
        # 422, 400, 400, 413, never a trace.
        for payload, ctype, signature, want in (
            (body, wire.MSGPACK, "sha256=\u00e9\u00e9", 422),
            (b"\xc1\xc1", wire.MSGPACK, None, 400),
            (b'{"seq": 1, "results": [', "application/json", None, 400),
            (b"\x00" * (16 << 20) + b"\x00", wire.MSGPACK, None, 413),
        ):
            headers = {
                **auth,
                "Content-Type": ctype,
                wire.SIGNATURE_HEADER: signature or wire.sign(key, payload),
            }
            async with http.post(
                f"{server.base}/api/agents/results", data=io.BytesIO(payload), headers=headers
            ) as r:
                text = await r.text()
                assert r.status == want, (want, r.status, text)
                assert "Traceback" not in text and "File " not in text

        # Revoking cuts the agent off at once: its next request is refused and it stops.
        code, _ = await api(http, server, "DELETE", f"/api/agents/{aid}")
        assert code == 204
        async with http.get(f"{server.base}/api/agents/checks", headers=auth) as r:
            assert r.status == 401
        assert agent.proc is not None
        assert await asyncio.to_thread(agent.proc.wait, 30) == 3
        assert (await agent_row(http, server, aid))["status"] == "revoked"
    finally:
        agent.cleanup()
        await target.stop()


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


def test_agents_need_the_registration_token(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tocsin.cli",
            "agent",
            "--server",
            "http://127.0.0.1:9",
            "--data-dir",
            str(tmp_path / "a"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "TOCSIN_AGENT_TOKEN"},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "registration token" in done.stderr
