"""The agent process: register once, then heartbeat, pull the assigned checks, run them
with the embedded native engine on their own phases, and push the results.

Nothing is lost on the way: results are cut into batches every `flush_interval`, each
batch gets the next sequence number and is written to the spool directory (fsync'd)
before it is sent; it leaves the spool only once the server has acknowledged it. After a
restart or a network break the spool is sent again, in order; the server stores each
sequence number once and acknowledges (and ignores) the ones it already has. Results
probed but not yet spooled when the process is killed (at most `flush_interval` of
them) are the only ones that can be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tocsin.agent import wire
from tocsin.engine import Engine
from tocsin.models import Check, Result, StatusChange
from tocsin.security import hash_token

log = logging.getLogger("tocsin.agent")

CREDENTIAL_FILE = "agent.json"
SEQ_FILE = "seq"
SPOOL_DIR = "spool"
SENT_DIR = "sent"
REJECTED_DIR = "rejected"
VERSION = "tocsin-agent/1"
DEFAULT_SPOOL_BYTES = 256 << 20


class RevokedError(RuntimeError):
    """The server no longer accepts this agent's credential."""


class RegistrationError(RuntimeError):
    pass


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` whole or not at all (fsync'd, then renamed), created with
    `mode`. On an error (a full disk) the partial temporary file is removed."""
    tmp = path.with_name(path.name + ".tmp")
    # A leftover temporary file would keep its old permissions under O_TRUNC.
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SpoolFullError(OSError):
    """The spool holds `max_bytes` already: the batch was not written."""


class Spool:
    """Batches waiting for the server's acknowledgement, one file per sequence number,
    at most `max_bytes` of them."""

    def __init__(
        self, data_dir: Path, *, keep_sent: bool = False, max_bytes: int = DEFAULT_SPOOL_BYTES
    ) -> None:
        self.dir = data_dir / SPOOL_DIR
        self.max_bytes = max_bytes
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._seq_file = data_dir / SEQ_FILE
        self._keep = data_dir / SENT_DIR if keep_sent else None
        self._rejected = data_dir / REJECTED_DIR
        if self._keep is not None:
            self._keep.mkdir(exist_ok=True, mode=0o700)
        for stale in self.dir.glob("*.tmp"):
            stale.unlink()
        self.pending = sorted(int(p.stem) for p in self.dir.glob("*.batch"))
        self.sizes = {seq: self._path(seq).stat().st_size for seq in self.pending}
        last = int(self._seq_file.read_text()) if self._seq_file.exists() else 0
        self.last_seq = max([last, *self.pending])
        self.wake = asyncio.Event()

    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:016d}.batch"

    def floor(self, server_last: int) -> None:
        """Never reuse a sequence number the server has already stored."""
        if server_last > self.last_seq:
            self.last_seq = server_last
            _write_atomic(self._seq_file, str(server_last).encode())

    @property
    def size(self) -> int:
        """Bytes of the batches spooled."""
        return sum(self.sizes.values())

    def add(self, rows: list[list[Any]]) -> int:
        """Spool a batch under the next sequence number; SpoolFullError past
        `max_bytes`, OSError when the disk refuses (nothing written either way)."""
        seq = self.last_seq + 1
        body = wire.encode(seq, rows)
        if self.size + len(body) > self.max_bytes:
            raise SpoolFullError(f"the spool holds {self.size} bytes already")
        # The batch file (which carries its number) is durable before the counter moves.
        _write_atomic(self._path(seq), body)
        try:
            _write_atomic(self._seq_file, str(seq).encode())
        except OSError:
            self._path(seq).unlink()
            raise
        self.last_seq = seq
        self.pending.append(seq)
        self.sizes[seq] = len(body)
        self.wake.set()
        return seq

    def read(self, seq: int) -> bytes:
        return self._path(seq).read_bytes()

    def done(self, seq: int, *, rejected: bool = False) -> None:
        path = self._path(seq)
        if rejected:
            self._rejected.mkdir(exist_ok=True, mode=0o700)
            path.replace(self._rejected / path.name)
        elif self._keep is not None:
            path.replace(self._keep / path.name)
        else:
            path.unlink()
        self.pending.remove(seq)
        self.sizes.pop(seq, None)


class Agent:
    def __init__(
        self,
        *,
        server: str,
        data_dir: Path,
        token: str | None = None,
        name: str | None = None,
        location: str | None = None,
        flush_interval: float = 0.2,
        max_batch: int = 5_000,
        keep_sent: bool = False,
        spool_bytes: int = DEFAULT_SPOOL_BYTES,
    ) -> None:
        self.server = server.rstrip("/")
        self.spool_bytes = spool_bytes
        # Results kept in memory while the spool cannot take them (full, disk full);
        # past this the oldest are dropped and counted.
        self.max_buffer = 20 * max_batch
        self.dropped = 0
        self.data_dir = data_dir
        self.token = token
        self.name = name or os.uname().nodename
        self.location = location
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.keep_sent = keep_sent
        self.credential = ""
        self.agent_id = 0
        self.heartbeat_interval = 5.0
        self._buffer: list[list[Any]] = []
        self._etag: str | None = None
        self._checks: dict[int, Check] = {}
        self._stop = asyncio.Event()
        self._revoked = False

    # -- credential --------------------------------------------------------------------

    async def _register(self, http: aiohttp.ClientSession) -> None:
        path = self.data_dir / CREDENTIAL_FILE
        if path.exists():
            saved = json.loads(path.read_text())
            self.credential = saved["credential"]
            self.agent_id = int(saved["agent_id"])
            self.heartbeat_interval = float(saved.get("heartbeat_interval", 5.0))
            return
        if not self.token:
            raise RegistrationError(
                f"no credential in {path} and no registration token (--token reg_…) given"
            )
        body = {"token": self.token, "name": self.name, "location": self.location}
        async with http.post(f"{self.server}/api/agents/register", json=body) as resp:
            answer = await resp.json(content_type=None)
            if resp.status != 201:
                raise RegistrationError(f"registration refused ({resp.status}): {answer}")
        self.credential = answer["credential"]
        self.agent_id = int(answer["agent_id"])
        self.heartbeat_interval = float(answer["heartbeat_interval"])
        saved = {
            "server": self.server,
            "agent_id": self.agent_id,
            "credential": self.credential,
            "source": answer["source"],
            "heartbeat_interval": self.heartbeat_interval,
        }
        _write_atomic(path, json.dumps(saved).encode(), 0o600)
        log.info("registered as agent %s (%s)", self.agent_id, answer["source"])

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}

    def _refused(self, status: int) -> None:
        if status == 401:
            self._revoked = True
            self._stop.set()
            raise RevokedError("the server refused this agent's credential (revoked?)")

    # -- loops -------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped (0) or revoked (3)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        spool = Spool(self.data_dir, keep_sent=self.keep_sent, max_bytes=self.spool_bytes)
        timeout = aiohttp.ClientTimeout(total=30, connect=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    await self._register(http)
                    break
                except aiohttp.ClientError as exc:
                    log.warning("server unreachable (%s); retrying registration", exc)
                    await asyncio.sleep(1.0)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stop.set)
            async with Engine() as engine:
                engine.add_listener(self._on_batch)
                tasks = [
                    loop.create_task(self._control_loop(http, engine, spool)),
                    loop.create_task(self._flush_loop(spool)),
                    loop.create_task(self._send_loop(http, spool)),
                ]
                await self._stop.wait()
            # The engine is closed: its last results are in the buffer.
            self._flush(spool)
            if not self._revoked:
                # A short grace to hand over what is spooled; the rest goes next start.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        while spool.pending and not tasks[2].done():  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, RevokedError):
                    await task
        return 3 if self._revoked else 0

    def _on_batch(self, results: Sequence[Result], changes: Sequence[StatusChange]) -> None:
        self._buffer.extend(wire.row(r) for r in results)

    def _flush(self, spool: Spool) -> None:
        """Spool the buffered results. When the spool is full or the disk refuses, they
        stay buffered (up to `max_buffer`, then the oldest are dropped and counted) and
        the next flush tries again: probing goes on, the process does not die."""
        while self._buffer:
            rows = self._buffer[: self.max_batch]
            try:
                spool.add(rows)
            except OSError as exc:
                excess = len(self._buffer) - self.max_buffer
                if excess > 0:
                    del self._buffer[:excess]
                    self.dropped += excess
                    log.error("cannot spool results (%s); %d dropped so far", exc, self.dropped)
                else:
                    log.warning("cannot spool results (%s); %d kept", exc, len(self._buffer))
                return
            del self._buffer[: len(rows)]

    async def _flush_loop(self, spool: Spool) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            self._flush(spool)

    async def _control_loop(
        self, http: aiohttp.ClientSession, engine: Engine, spool: Spool
    ) -> None:
        while True:
            try:
                await self._heartbeat(http, spool)
                await self._pull(http, engine)
            except RevokedError as exc:
                log.error("%s; stopping", exc)
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("server unreachable: %s", exc)
            await asyncio.sleep(self.heartbeat_interval)

    async def _heartbeat(self, http: aiohttp.ClientSession, spool: Spool) -> None:
        body = {
            "version": VERSION,
            "load": os.getloadavg()[0],
            "queue_depth": len(spool.pending) + (1 if self._buffer else 0),
        }
        async with http.post(
            f"{self.server}/api/agents/heartbeat", json=body, headers=self._headers
        ) as resp:
            self._refused(resp.status)
            if resp.status != 200:
                log.warning("heartbeat answered %s", resp.status)
                return
            answer = await resp.json()
        self.heartbeat_interval = float(answer.get("heartbeat_interval", self.heartbeat_interval))
        spool.floor(int(answer.get("last_batch_seq", 0)))

    async def _pull(self, http: aiohttp.ClientSession, engine: Engine) -> None:
        headers = dict(self._headers)
        if self._etag:
            headers["If-None-Match"] = self._etag
        async with http.get(f"{self.server}/api/agents/checks", headers=headers) as resp:
            self._refused(resp.status)
            if resp.status == 304:
                return
            if resp.status != 200:
                log.warning("pulling checks answered %s", resp.status)
                return
            answer = await resp.json()
            etag = resp.headers.get("ETag")
        wanted = {}
        for spec in answer["checks"]:
            wanted[spec["id"]] = Check(
                id=spec["id"],
                type=spec["type"],
                interval=spec["interval"],
                timeout=spec["timeout"],
                name=spec.get("name") or "",
                url=spec.get("url"),
                host=spec.get("host"),
                port=spec.get("port"),
                options=spec.get("options") or {},
            )
        gone = [cid for cid in self._checks if cid not in wanted]
        if gone:
            engine.remove(gone)
        for cid, check in wanted.items():
            if self._checks.get(cid) == check:
                continue
            try:
                engine.upsert([check])
            except ValueError as exc:
                log.error("check %s not run: %s", cid, exc)
                continue
        self._checks = {cid: c for cid, c in wanted.items() if engine.get(cid) is not None}
        self._etag = etag
        log.info("running %d checks (assignment %s)", len(self._checks), answer["version"])

    async def _send_loop(self, http: aiohttp.ClientSession, spool: Spool) -> None:
        key = wire.signing_key(hash_token(self.credential))
        backoff = 0.05
        while True:
            if not spool.pending:
                spool.wake.clear()
                await spool.wake.wait()
                continue
            seq = spool.pending[0]
            body = spool.read(seq)
            headers = {
                **self._headers,
                "Content-Type": wire.MSGPACK,
                wire.SIGNATURE_HEADER: wire.sign(key, body),
            }
            try:
                async with http.post(
                    f"{self.server}/api/agents/results", data=body, headers=headers
                ) as resp:
                    if resp.status == 401:
                        self._refused(resp.status)
                    if resp.status == 200:
                        answer = await resp.json()
                        if int(answer["seq"]) == seq:
                            spool.done(seq)
                            backoff = 0.05
                            continue
                    elif resp.status in (400, 413, 422):
                        # This batch can never be accepted; set it aside, keep going.
                        log.error("batch %s refused (%s): %s", seq, resp.status, await resp.text())
                        spool.done(seq, rejected=True)
                        continue
                    else:
                        log.warning("batch %s answered %s; will retry", seq, resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("sending batch %s failed (%s); will retry", seq, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


def run_agent(agent: Agent) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(agent.run())
    return uvloop.run(agent.run())


def main_sync(agent: Agent) -> int:
    started = time.monotonic()
    try:
        return run_agent(agent)
    except RegistrationError as exc:
        log.error("%s", exc)
        return 2
    finally:
        log.info("agent stopped after %.1f s", time.monotonic() - started)
