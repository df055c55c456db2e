"""The SysTeam clients' spellings of the agent administration routes
(`/api/organizations/{id}/agents…`, `POST /api/agents/registration-token`) and the single
check incident (`GET /api/checks/{id}/incidents/{iid}`), over a real `tocsin serve`: the
tokens they hand out register agents, the roles and the organisation walls are those of
the routes they alias."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import Server, api, create_check, free_port, other_org_user, wait_for

ORG_TOKEN = "/api/organizations/{org}/agents/registration-token"
LEGACY_TOKEN = "/api/agents/registration-token"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("systeam") / "data")
    s.start()
    yield s
    s.kill()


async def register(http: aiohttp.ClientSession, server: Server, token: str) -> dict[str, Any]:
    async with http.post(f"{server.base}/api/agents/register", json={"token": token}) as r:
        assert r.status == 201, await r.text()
        return await r.json()  # type: ignore[no-any-return]


def names_field(body: Any, field: str) -> bool:
    return field in str(body)


async def test_org_registration_token_has_install_lines_and_registers_an_agent(
    srv: Server, http: aiohttp.ClientSession
) -> None:
    async with http.post(srv.base + ORG_TOKEN.format(org=1), headers=srv.headers) as r:
        assert r.status == 201, await r.text()
        made = await r.json()
    token = made["token"]
    assert token.startswith("reg_") and made["organization_id"] == 1
    assert made["prefix"] == token[:8] and made["location"] is None
    assert made["server_url"] == srv.base
    assert f"tocsin agent --server {srv.base} --token {token}" in made["install_curl"]
    assert made["install_curl"].startswith("python3 -m pip install tocsin && ")
    assert made["install_docker"].startswith("docker run ")
    assert f"agent --server {srv.base} --token {token}" in made["install_docker"]
    # Listed with the other tokens (the same record), without the secret.
    code, tokens = await api(http, srv, "GET", "/api/organizations/1/agent-tokens")
    assert code == 200 and any(t["id"] == made["id"] and "token" not in t for t in tokens)

    agent = await register(http, srv, token)
    aid = agent["agent_id"]
    code, listed = await api(http, srv, "GET", "/api/organizations/1/agents")
    assert code == 200
    (mine,) = [a for a in listed if a["id"] == aid]
    code, everywhere = await api(http, srv, "GET", "/api/agents/")
    assert code == 200 and mine == next(a for a in everywhere if a["id"] == aid)
    assert mine["kind"] == "private" and mine["status"] == "online"
    code, one = await api(http, srv, "GET", f"/api/organizations/1/agents/{aid}")
    assert code == 200 and one == mine
    code, page = await api(http, srv, "GET", "/api/organizations/1/agents?limit=1&offset=0")
    assert code == 200 and len(page) == 1

    # DELETE revokes: 204, the agent shows revoked and its credential stops working.
    code, _ = await api(http, srv, "DELETE", f"/api/organizations/1/agents/{aid}")
    assert code == 204
    code, one = await api(http, srv, "GET", f"/api/agents/{aid}")
    assert code == 200 and one["status"] == "revoked" and one["revoked_at"]
    auth = {"Authorization": f"Bearer {agent['credential']}"}
    async with http.post(f"{srv.base}/api/agents/heartbeat", headers=auth, json={}) as r:
        assert r.status == 401
    code, _ = await api(http, srv, "DELETE", f"/api/organizations/1/agents/{aid}")
    assert code == 204  # again: nothing more to do
    code, _ = await api(http, srv, "DELETE", f"/api/organizations/1/agents/{aid + 1000}")
    assert code == 404


async def test_install_curl_line_starts_an_agent(
    srv: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The `tocsin agent …` part of `install_curl`, run as is (the package is already
    installed here), registers and heartbeats."""
    code, made = await api(http, srv, "POST", ORG_TOKEN.format(org=1), json={"name": "cmd"})
    assert code == 201
    install, run = made["install_curl"].split(" && ", 1)
    assert install == "python3 -m pip install tocsin"
    argv = shlex.split(run)
    assert argv[0] == "tocsin"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tocsin.cli",
        *argv[1:],
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        state = tmp_path / "agent-data" / "agent.json"

        async def online() -> bool:
            if not state.exists():
                return False
            aid = json.loads(state.read_text())["agent_id"]
            code, one = await api(http, srv, "GET", f"/api/organizations/1/agents/{aid}")
            return code == 200 and one["last_heartbeat_at"] is not None

        await wait_for(online, timeout=30)
    finally:
        proc.kill()
        await proc.wait()


async def test_org_registration_token_takes_the_optional_fields(
    srv: Server, http: aiohttp.ClientSession
) -> None:
    path = ORG_TOKEN.format(org=1)
    code, made = await api(http, srv, "POST", path, json={"name": "pl", "location": "EU-PL"})
    assert code == 201 and made["name"] == "pl" and made["location"] == "EU-PL"
    assert "--location EU-PL" in made["install_curl"]
    assert "--location EU-PL" in made["install_docker"]
    agent = await register(http, srv, made["token"])
    assert agent["kind"] == "geo" and agent["location"] == "EU-PL"
    code, body = await api(http, srv, "POST", path, json={"expires_in": 1})
    assert code == 422 and names_field(body, "expires_in")
    code, body = await api(http, srv, "POST", path, json=[1])
    assert code == 422
    code, body = await api(http, srv, "POST", path, data=b"{nope", headers={"X": "y"})
    assert code == 400
    code, body = await api(http, srv, "POST", path, json={"location": "a b"})
    assert code == 422 and names_field(body, "location")


async def test_legacy_registration_token(srv: Server, http: aiohttp.ClientSession) -> None:
    body = {"name": "old", "mode": "agent", "organization_id": 1, "surplus": [1, 2]}
    code, made = await api(http, srv, "POST", LEGACY_TOKEN, json=body)
    assert code == 201, made
    assert made["name"] == "old" and made["organization_id"] == 1
    assert made["token"] in made["install_curl"] and made["token"] in made["install_docker"]
    agent = await register(http, srv, made["token"])
    assert agent["organization_id"] == 1 and agent["kind"] == "private"
    for mode in ("central", "PRIVATE", None, ""):
        code, made = await api(
            http, srv, "POST", LEGACY_TOKEN, json={"mode": mode, "organization_id": 1}
        )
        assert code == 201, (mode, made)
    code, made = await api(
        http,
        srv,
        "POST",
        LEGACY_TOKEN,
        json={"mode": "geo", "location": "US-E", "organization_id": 1},
    )
    assert code == 201 and made["location"] == "US-E"

    for bad, field in [
        ({"mode": "geo", "organization_id": 1}, "location"),
        ({"mode": "agent", "location": "X", "organization_id": 1}, "location"),
        ({"mode": "sideways", "organization_id": 1}, "mode"),
        ({"mode": 3, "organization_id": 1}, "mode"),
        ({"organization_id": "one"}, "organization_id"),
        ({"organization_id": 0}, "organization_id"),
        ({"organization_id": 1, "name": "x" * 201}, "name"),
    ]:
        code, answer = await api(http, srv, "POST", LEGACY_TOKEN, json=bad)
        assert code == 422 and names_field(answer, field), (bad, code, answer)
    code, _ = await api(http, srv, "POST", LEGACY_TOKEN)
    assert code == 422

    # Without organization_id: the caller's only organisation.
    outsider, org = await other_org_user(srv)
    code, made = await api(http, srv, "POST", LEGACY_TOKEN, token=outsider, json={"name": "x"})
    assert code == 201 and made["organization_id"] == org
    agent = await register(http, srv, made["token"])
    assert agent["organization_id"] == org


async def test_roles(srv: Server, http: aiohttp.ClientSession) -> None:
    made = await api(http, srv, "POST", ORG_TOKEN.format(org=1))
    aid = (await register(http, srv, made[1]["token"]))["agent_id"]
    for role in ("VIEWER", "MEMBER"):
        token, _ = await other_org_user(srv, role=role, org_id=1)
        code, _ = await api(http, srv, "POST", ORG_TOKEN.format(org=1), token=token)
        assert code == 403, role
        body = {"organization_id": 1}
        code, _ = await api(http, srv, "POST", LEGACY_TOKEN, token=token, json=body)
        assert code == 403, role
        code, _ = await api(http, srv, "DELETE", f"/api/organizations/1/agents/{aid}", token=token)
        assert code == 403, role
        code, listed = await api(http, srv, "GET", "/api/organizations/1/agents", token=token)
        assert code == 200 and aid in [a["id"] for a in listed], role
    token, _ = await other_org_user(srv, role="ADMIN", org_id=1)
    code, made = await api(http, srv, "POST", ORG_TOKEN.format(org=1), token=token)
    assert code == 201
    code, _ = await api(http, srv, "DELETE", f"/api/organizations/1/agents/{aid}", token=token)
    assert code == 204


async def test_other_organisations_get_404(srv: Server, http: aiohttp.ClientSession) -> None:
    made = await api(http, srv, "POST", ORG_TOKEN.format(org=1))
    aid = (await register(http, srv, made[1]["token"]))["agent_id"]
    outsider, org = await other_org_user(srv)
    for method, path in [
        ("GET", "/api/organizations/1/agents"),
        ("POST", ORG_TOKEN.format(org=1)),
        ("GET", f"/api/organizations/1/agents/{aid}"),
        ("DELETE", f"/api/organizations/1/agents/{aid}"),
        # Their own organisation, another's agent.
        ("GET", f"/api/organizations/{org}/agents/{aid}"),
        ("DELETE", f"/api/organizations/{org}/agents/{aid}"),
        ("GET", "/api/organizations/999999/agents"),
    ]:
        code, _ = await api(http, srv, method, path, token=outsider)
        assert code == 404, (method, path)
    code, _ = await api(
        http, srv, "POST", LEGACY_TOKEN, token=outsider, json={"organization_id": 1}
    )
    assert code == 404
    code, listed = await api(http, srv, "GET", f"/api/organizations/{org}/agents", token=outsider)
    assert code == 200 and listed == []
    # Still alive: the outsider's DELETE did nothing.
    code, one = await api(http, srv, "GET", f"/api/agents/{aid}")
    assert code == 200 and one["revoked_at"] is None


@pytest.mark.both_backends
async def test_single_check_incident_is_the_list_item(
    server: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    check = await create_check(http, server, f"http://127.0.0.1:{free_port()}/")
    cid = check["id"]

    async def listed() -> list[dict[str, Any]]:
        code, page = await api(http, server, "GET", f"/api/checks/{cid}/incidents")
        assert code == 200, page
        return page["incidents"]  # type: ignore[no-any-return]

    (item,) = await wait_for(listed, timeout=30)
    iid = item["id"]
    code, one = await api(http, server, "GET", f"/api/checks/{cid}/incidents/{iid}")
    assert code == 200 and one == item
    viewer, _ = await other_org_user(server, role="VIEWER", org_id=1)
    code, seen = await api(http, server, "GET", f"/api/checks/{cid}/incidents/{iid}", token=viewer)
    assert code == 200 and seen["id"] == iid
    other = await create_check(http, server, f"http://127.0.0.1:{free_port()}/", name="b")
    outsider, _ = await other_org_user(server)
    for path, token in [
        (f"/api/checks/{other['id']}/incidents/{iid}", None),
        (f"/api/checks/{cid}/incidents/{iid + 1000}", None),
        (f"/api/checks/{cid}/incidents/{iid}", outsider),
    ]:
        code, _ = await api(http, server, "GET", path, token=token)
        assert code == 404, path
