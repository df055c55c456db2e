"""The open inbound incidents, in memory: which incident a dedup key reaches, the newest
open incident of an integration key, and the open incidents of a key by the value of its
grouping field. Loaded from the store at start and kept by the one `InboundProcessor` of
the process (tocsin/paging/inbound.py), so no event needs a read.

Incidents resolved are skipped by every lookup and dropped from the index once their
batch committed (`discard`); an incident is reached by its own dedup key and by every key
that joined it through grouping (`aliases`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from tocsin.paging.inbound_formats import field_value
from tocsin.store.base import Row

OPEN = "OPEN"
ACKNOWLEDGED = "ACKNOWLEDGED"
RESOLVED = "RESOLVED"

# The columns of an incident that inbound events change, saved before a batch changes
# them and put back if it fails.
_STATE = (
    "status",
    "severity",
    "title",
    "acknowledged_at",
    "resolved_at",
    "event_count",
    "last_event_at",
    "escalation_due_at",
)


class OpenIncident:
    """An inbound incident not resolved when its batch began. `id` is below zero while
    the batch opening it is being written (see `Store.write_inbound_batch`)."""

    __slots__ = (
        "acknowledged_at",
        "acknowledged_by",
        "aliases",
        "details",
        "escalation_due_at",
        "escalation_policy_id",
        "escalation_round",
        "escalation_step",
        "event_count",
        "group",
        "group_field",
        "id",
        "key_id",
        "last_event_at",
        "org_id",
        "resolved_at",
        "seq",
        "service_id",
        "severity",
        "started_at",
        "status",
        "title",
    )

    def __init__(
        self,
        *,
        seq: int,
        id: int,
        org_id: int,
        key_id: int,
        dedup_key: str,
        severity: str,
        title: str,
        started_at: float,
        details: dict[str, Any],
        status: str = OPEN,
        event_count: int = 1,
        last_event_at: float | None = None,
        acknowledged_at: float | None = None,
        acknowledged_by: int | None = None,
        escalation_policy_id: int | None = None,
        escalation_step: int = 0,
        escalation_round: int = 0,
        escalation_due_at: float | None = None,
        service_id: int | None = None,
    ) -> None:
        self.seq = seq
        self.id = id
        self.org_id = org_id
        self.key_id = key_id
        self.aliases = [dedup_key]
        self.severity = severity
        self.title = title
        self.started_at = started_at
        self.details = details
        self.status = status
        self.event_count = event_count
        self.last_event_at = last_event_at if last_event_at is not None else started_at
        self.acknowledged_at = acknowledged_at
        self.acknowledged_by = acknowledged_by
        self.resolved_at: float | None = None
        self.escalation_policy_id = escalation_policy_id
        self.escalation_step = escalation_step
        self.escalation_round = escalation_round
        self.escalation_due_at = escalation_due_at
        # The service of its integration key, if any (its channels hear of it too).
        self.service_id = service_id
        # The value of the key's grouping field, and the field it was read for.
        self.group: str | None = None
        self.group_field: str | None = None

    @property
    def dedup_key(self) -> str:
        return self.aliases[0]

    def state(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _STATE)

    def restore(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(_STATE, state, strict=True):
            setattr(self, name, value)

    def fields(self) -> dict[str, Any]:
        """The incident's event fields, as grouping paths read them."""
        return {"summary": self.title, "severity": self.severity, **self.details}

    def row(self) -> Row:
        """The incident as the store's rows are (`incidents.incident_json` renders it)."""
        return {
            "id": self.id,
            "organization_id": self.org_id,
            "check_id": None,
            "kind": "inbound",
            "status": self.status,
            "severity": self.severity,
            "title": self.title,
            "cause": None,
            "dedup_key": self.aliases[0],
            "sources": {},
            "started_at": self.started_at,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": self.resolved_at,
            "resolved_by": None,
            "integration_key_id": self.key_id,
            "event_count": self.event_count,
            "details": self.details,
            "last_event_at": self.last_event_at,
            "escalation_policy_id": self.escalation_policy_id,
            "escalation_step": self.escalation_step,
            "escalation_round": self.escalation_round,
            "escalation_due_at": self.escalation_due_at,
            "service_id": self.service_id,
        }


class InboundIndex:
    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self.by_id: dict[int, OpenIncident] = {}
        # (key id, dedup key) -> the incidents it reaches, oldest first
        self._dedup: dict[tuple[int, str], list[OpenIncident]] = {}
        # key id -> its open incidents by seq, oldest first
        self._by_key: dict[int, dict[int, OpenIncident]] = {}
        # key id -> (grouping field, value -> the incidents with it, oldest first)
        self._groups: dict[int, tuple[str, dict[str, list[OpenIncident]]]] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[OpenIncident]:
        return iter(list(self.by_id.values()))

    def next_seq(self) -> int:
        return next(self._seq)

    def load(self, rows: Iterable[Row]) -> None:
        """The store's open inbound incidents (`Store.open_inbound_incidents`), oldest
        first."""
        for row in rows:
            if row.get("integration_key_id") is None or row.get("dedup_key") is None:
                continue  # its key was deleted: no event can reach it
            inc = OpenIncident(
                seq=self.next_seq(),
                id=int(row["id"]),
                org_id=int(row["organization_id"]),
                key_id=int(row["integration_key_id"]),
                dedup_key=row["dedup_key"],
                severity=row["severity"],
                title=row["title"],
                started_at=float(row["started_at"]),
                details=row.get("details") or {},
                status=row["status"],
                event_count=int(row.get("event_count") or 0),
                last_event_at=row.get("last_event_at"),
                acknowledged_at=row.get("acknowledged_at"),
                acknowledged_by=row.get("acknowledged_by"),
                escalation_policy_id=row.get("escalation_policy_id"),
                escalation_step=int(row.get("escalation_step") or 0),
                escalation_round=int(row.get("escalation_round") or 0),
                escalation_due_at=row.get("escalation_due_at"),
                service_id=row.get("service_id"),
            )
            self.add(inc)
            self.by_id[inc.id] = inc
            for alias in row.get("aliases") or ():
                if alias not in inc.aliases:
                    self.alias(inc, alias)

    # -- lookups (resolved incidents are skipped) -------------------------------------------

    def reaching(self, key_id: int, dedup_key: str) -> OpenIncident | None:
        """The newest incident the dedup key reaches."""
        for inc in reversed(self._dedup.get((key_id, dedup_key), ())):
            if inc.status != RESOLVED:
                return inc
        return None

    def newest(self, key_id: int) -> OpenIncident | None:
        """The key's newest open incident."""
        for inc in reversed(self._by_key.get(key_id, {}).values()):
            if inc.status != RESOLVED:
                return inc
        return None

    def in_group(self, key_id: int, field: str, value: str) -> OpenIncident | None:
        """The key's newest open incident whose grouping field had `value`."""
        for inc in reversed(self._group_map(key_id, field).get(value, ())):
            if inc.status != RESOLVED:
                return inc
        return None

    def _group_map(self, key_id: int, field: str) -> dict[str, list[OpenIncident]]:
        have = self._groups.get(key_id)
        if have is not None and have[0] == field:
            return have[1]
        # First use, or the key's field changed: read it from every open incident.
        groups: dict[str, list[OpenIncident]] = {}
        for inc in self._by_key.get(key_id, {}).values():
            value = self._value(inc, field)
            if value is not None:
                groups.setdefault(value, []).append(inc)
        self._groups[key_id] = (field, groups)
        return groups

    @staticmethod
    def _value(inc: OpenIncident, field: str) -> str | None:
        if inc.group_field != field:
            inc.group, inc.group_field = field_value(inc.fields(), field), field
        return inc.group

    # -- changes ----------------------------------------------------------------------------

    def add(self, inc: OpenIncident) -> None:
        """A new open incident (newest of its key), reached by its dedup key."""
        self._dedup.setdefault((inc.key_id, inc.aliases[0]), []).append(inc)
        self._by_key.setdefault(inc.key_id, {})[inc.seq] = inc
        have = self._groups.get(inc.key_id)
        if have is not None:
            value = self._value(inc, have[0])
            if value is not None:
                have[1].setdefault(value, []).append(inc)

    def alias(self, inc: OpenIncident, dedup_key: str) -> None:
        """`dedup_key` reaches `inc` from now on (it joined it by grouping)."""
        inc.aliases.append(dedup_key)
        self._dedup.setdefault((inc.key_id, dedup_key), []).append(inc)

    def unalias(self, inc: OpenIncident, dedup_key: str) -> None:
        inc.aliases.remove(dedup_key)
        self._drop(self._dedup, (inc.key_id, dedup_key), inc)

    def forget_organization(self, org_id: int) -> None:
        """The organisation was deleted (its incidents with it)."""
        for inc in [i for i in self.by_id.values() if i.org_id == org_id]:
            self.discard(inc)

    def discard(self, inc: OpenIncident) -> None:
        """Forget an incident (resolved, or never written)."""
        for alias in inc.aliases:
            self._drop(self._dedup, (inc.key_id, alias), inc)
        mine = self._by_key.get(inc.key_id)
        if mine is not None:
            mine.pop(inc.seq, None)
            if not mine:
                del self._by_key[inc.key_id]
                self._groups.pop(inc.key_id, None)
        have = self._groups.get(inc.key_id)
        if have is not None and inc.group_field == have[0] and inc.group is not None:
            self._drop(have[1], inc.group, inc)
        if self.by_id.get(inc.id) is inc:
            del self.by_id[inc.id]

    @staticmethod
    def _drop(lists: dict[Any, list[OpenIncident]], key: Any, inc: OpenIncident) -> None:
        found = lists.get(key)
        if found is None:
            return
        for i in range(len(found) - 1, -1, -1):
            if found[i] is inc:
                del found[i]
                break
        if not found:
            del lists[key]
