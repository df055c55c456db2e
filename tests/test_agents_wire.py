"""The batch format agents send: every malformed value is refused with its location,
by the same rules on the fast (column-wise) and the explaining (row-wise) path."""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tocsin.agent import wire
from tocsin.agent.runner import Spool, SpoolFullError

NOW = 1_790_000_000.0


def good(**change: Any) -> list[Any]:
    row: list[Any] = [7, "UP", NOW, 12.5, NOW - 0.1, None, None, 200, 0.1, 0.2, None, 3.0, None]
    for i, v in change.items():
        row[int(i[1:])] = v
    return row


def parse(rows: list[Any], seq: Any = 1) -> wire.Batch:
    return wire.parse({"seq": seq, "results": rows}, "agent:3", oldest=NOW - 60, newest=NOW + 60)


def test_a_good_batch_round_trips_through_msgpack_and_json() -> None:
    rows = [good(), good(c1="DOWN", c5="timeout", c6="no answer", c7=None, c12='{"a": 1}')]
    body = wire.encode(5, rows)
    batch = parse(wire.decode(body, wire.MSGPACK)["results"], 5)
    assert batch.seq == 5 and batch.rows == rows
    assert batch.store_rows(9)[1][:7] == (7, 9, "agent:3", NOW, NOW - 0.1, 12.5, "DOWN")
    assert batch.verdict_rows()[1] == (7, NOW, 12.5, "DOWN", "timeout", "no answer")
    assert wire.decode(b'{"seq": 1, "results": []}', "application/json")["seq"] == 1
    assert parse([]).rows == []


def test_nul_in_a_rows_text_is_kept_as_u_fffd_not_refused() -> None:
    """A refused batch would stay in the agent's spool, and PostgreSQL cannot store
    U+0000: the text is kept with U+FFFD, as every result's is."""
    batch = parse([good(c5="kind\x00", c6="got \x00 back", c12='{"a": "\\u0000"}')])
    stored = batch.store_rows(9)[0]
    assert stored[:3] == (7, 9, "agent:3")
    assert "kind\ufffd" in stored and "got \ufffd back" in stored
    assert not any(isinstance(v, str) and "\x00" in v for v in stored)
    assert batch.verdict_rows()[0][4:] == ("kind\ufffd", "got \ufffd back")


def test_details_that_are_not_a_json_object_are_left_out() -> None:
    """Readers parse a result's details: text that is not a JSON object would make
    every read of the check fail, so it is left out (the result is kept)."""
    rows = [good(c12=d) for d in ('{"a": 1}', "{not json", "[1, 2]", '"x"')]
    stored = [r[-1] for r in parse(rows).store_rows(9)]
    assert stored == ['{"a": 1}', None, None, None]


@pytest.mark.parametrize(
    ("row", "loc"),
    [
        ("not a row", ["results", 1]),
        (good()[:-1], ["results", 1]),
        (good(c0=0), ["results", 1, 0]),
        (good(c0=True), ["results", 1, 0]),
        (good(c0=2**63), ["results", 1, 0]),
        (good(c1="LATE"), ["results", 1, 1]),
        (good(c1=None), ["results", 1, 1]),
        (good(c2=NOW - 3600), ["results", 1, 2]),
        (good(c2=NOW + 3600), ["results", 1, 2]),
        (good(c2=math.nan), ["results", 1, 2]),
        (good(c3=-1.0), ["results", 1, 3]),
        (good(c3=math.inf), ["results", 1, 3]),
        (good(c3="12"), ["results", 1, 3]),
        (good(c4=math.nan), ["results", 1, 4]),
        (good(c5=5), ["results", 1, 5]),
        (good(c6="x" * 2001), ["results", 1, 6]),
        (good(c7=-3), ["results", 1, 7]),
        (good(c7=2**31), ["results", 1, 7]),
        (good(c7=False), ["results", 1, 7]),
        (good(c8=-0.5), ["results", 1, 8]),
        (good(c11="fast"), ["results", 1, 11]),
        (good(c12=["x"]), ["results", 1, 12]),
    ],
)
def test_each_bad_value_is_named(row: Any, loc: list[Any]) -> None:
    with pytest.raises(wire.BadBatchError) as err:
        parse([good(), row, good()])
    assert err.value.loc == loc


@pytest.mark.parametrize("seq", [0, -1, True, 1.5, "1", 2**63])
def test_the_sequence_number_is_a_positive_integer(seq: Any) -> None:
    with pytest.raises(wire.BadBatchError) as err:
        parse([good()], seq)
    assert err.value.loc == ["seq"]


def test_undecodable_bodies_and_signatures() -> None:
    with pytest.raises(wire.BadBatchError):
        wire.decode(b"\xc1", wire.MSGPACK)
    with pytest.raises(wire.BadBatchError):
        wire.decode(wire.encode(1, [])[:-1], wire.MSGPACK)
    # Text neither database can store, and a document nested a thousand levels deep.
    for bad in (b'{"seq": 1, "results": [["\\ud800"]]}', b"[" * 1000 + b"]" * 1000):
        with pytest.raises(wire.BadBatchError):
            wire.decode(bad, "application/json")
    with pytest.raises(wire.BadBatchError):
        wire.decode(b"\x91" * 1000 + b"\x90", wire.MSGPACK)  # msgpack arrays, as deep
    key = wire.signing_key("abc")
    body = wire.encode(1, [good()])
    assert wire.signature_ok(key, body, wire.sign(key, body))
    assert not wire.signature_ok(key, body + b"x", wire.sign(key, body))
    assert not wire.signature_ok(wire.signing_key("abd"), body, wire.sign(key, body))
    assert not wire.signature_ok(key, body, None)
    # A header the client filled with non-ASCII characters is a mismatch, not a crash.
    assert not wire.signature_ok(key, body, "sha256=\u00e9" + "0" * 63)
    assert not wire.signature_ok(key, body, "\udcff")


def test_the_spool_is_private_and_bounded(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir(mode=0o700)
    # A temporary file left world-readable (a crash) does not pass its mode on.
    stale = tmp_path / "spool" / f"{1:016d}.batch.tmp"
    stale.write_bytes(b"x")
    stale.chmod(0o644)
    spool = Spool(tmp_path, max_bytes=2_000)
    seq = spool.add([good()])
    path = tmp_path / "spool" / f"{seq:016d}.batch"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "seq").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    # Past its bound the spool refuses a batch and writes nothing.
    with pytest.raises(SpoolFullError):
        spool.add([good()] * 40)
    assert spool.pending == [seq] and spool.last_seq == seq
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [path.name]
    spool.done(seq)
    assert spool.add([good()] * 10) == seq + 1
    # A restart counts what is spooled against the bound.
    assert Spool(tmp_path, max_bytes=2_000).size == spool.size > 0


def test_a_full_disk_keeps_results_in_memory_then_drops_the_oldest(tmp_path: Path) -> None:
    """A real write error (the file size limit, EFBIG) in a child process: flushing
    neither raises nor leaves partial files; the results stay buffered, bounded."""
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from tocsin.agent.runner import Agent, Spool
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        d = Path({str(tmp_path)!r})
        agent = Agent(server="http://127.0.0.1:9", data_dir=d, max_batch=100)
        spool = Spool(d)
        row = {good()!r}
        agent._buffer = [list(row) for _ in range(150)]
        agent._flush(spool)
        assert spool.pending == [1, 2] and agent._buffer == [], spool.pending
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, resource.RLIM_INFINITY))
        agent._buffer += [list(row) for _ in range(2_500)]
        agent._flush(spool)
        assert spool.pending == [1, 2] and len(agent._buffer) == 2_000, len(agent._buffer)
        assert agent.dropped == 500, agent.dropped
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        agent._flush(spool)
        assert agent._buffer == [] and len(spool.pending) == 22, spool.pending
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(wire.__file__).parents[2])},
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert not list((tmp_path / "spool").glob("*.tmp"))
