"""How a stored check becomes the engine's `Check`: the mapping every loader uses (the
server at start-up, the API on every write, the agents' assigned-check lists), so the
engine sees a check the same way whoever hands it over."""

from __future__ import annotations

import logging

from tocsin.engine import Engine
from tocsin.models import Check, Status
from tocsin.probes import UnknownProbeTypeError, default_registry
from tocsin.store.base import Row, Store

log = logging.getLogger("tocsin.checks")


def runnable(check_type: str) -> bool:
    """Whether the engine has a probe for the type (native, or a registered plugin)."""
    try:
        default_registry.kind(check_type)
    except UnknownProbeTypeError:
        return False
    return True


def probed_remotely(row: Row) -> bool:
    """Agents or geo locations probe the check (assigned agents, geo monitoring): the
    server never probes it itself, it only judges their results."""
    return row["type"] != "heartbeat" and bool(
        row.get("assigned_agent_ids") or row.get("geo_monitoring_enabled")
    )


def scheduled_check(row: Row, engine: Engine) -> Check:
    """The check as the server's engine schedules it: probed here, or (`remote`) only
    judged from the results agents report."""
    check = engine_check(row, engine)
    if probed_remotely(row):
        check.options["remote"] = True
    return check


def engine_check(row: Row, engine: Engine | None = None) -> Check:
    """The engine's view of a stored check. With `engine`, critical sources are mapped
    to its source ids."""
    options = {k: v for k, v in row["config"].items() if v is not None}
    options["grace_period"] = row.get("grace_period", 60)
    options["alert_after_failures"] = row.get("alert_after_failures", 1) or 1
    if row.get("escalation_policy_id"):
        # Read by the incident manager when the check's incident opens.
        options["escalation_policy_id"] = row["escalation_policy_id"]
    if row.get("service_id"):
        # Its incidents belong to the service (its policy and channels apply).
        options["service_id"] = row["service_id"]
    critical = row.get("check_source_critical") or {}
    if engine is not None and critical:
        options["critical_sources"] = sorted(
            engine.source_id(source) for source, on in critical.items() if on
        )
    return Check(
        id=row["id"],
        type=row["type"],
        interval=row["interval"],
        timeout=row["timeout"],
        name=row["name"],
        url=row.get("url") or None,
        host=row.get("host") or None,
        port=row.get("port") or None,
        is_active=row["is_active"],
        options=options,
    )


async def load_checks(store: Store, engine: Engine) -> None:
    """Every stored check into the engine. Start-up never depends on one row being
    sane: a check the engine refuses now (a setting or rule refused since it was
    stored) is logged with its id and why, answered by the API with that reason
    (`schedule_error`), and the others load."""
    rows = await store.all_checks()
    engine.seed([(r["id"], Status(r["status"])) for r in rows if r["status"] in Status.__members__])
    checks = []
    for row in rows:
        if not runnable(row["type"]):
            continue  # stored and shown; no probe for this type yet
        try:
            checks.append(scheduled_check(row, engine))
        except Exception as exc:
            engine.refuse(row["id"], exc)
    loaded = len(checks) - len(engine.load(checks))
    for check_id, reason in sorted(engine.refusals().items()):
        log.error("check %s not scheduled: %s", check_id, reason)
    log.info("scheduled %d of %d checks", loaded, len(rows))
    for row in rows:
        # Heartbeat deadlines live in the engine: arm them again from the last ping.
        if row["type"] == "heartbeat" and row["last_ping_at"] and row["is_active"]:
            try:
                engine.rearm(row["id"], row["last_ping_at"])
            except KeyError:
                pass  # not scheduled (refused above)
            except Exception as exc:
                log.error("check %s: heartbeat deadline not armed: %s", row["id"], exc)
