"""The `api_scenario` probe: ordered HTTP requests, each able to use what earlier ones
answered (variables extracted by JSONPath, header or regular expression) and the check's
secrets, each with assertions (status, body, JSONPath value, header, latency). One
result per run: UP when every step passed; DOWN at the first failing step (the steps
after it are skipped), with each step's outcome and timing in `details`.

Placeholders `{{name}}` (a variable) and `{{secrets.name}}` (a secret of
`api_scenario_secrets`) are replaced in a step's URL, header values and body. Secret
values never appear in the result: every occurrence in messages and details is
replaced by `******`. See docs/probes-and-verdicts.md."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import jsonpath

from tocsin.models import Check, ProbeOutcome, Status
from tocsin.probes import default_registry
from tocsin.probes.http import _classify, _session

MAX_BODY = 1 << 20
MAX_SHOWN = 200
MASK = "******"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")

# Assertion operators (`op`), for JSONPath values, headers and bodies.
OPS = ("equals", "not_equals", "contains", "not_contains", "matches", "exists", "not_exists",
       "gt", "gte", "lt", "lte")  # fmt: skip


class StepFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def substitute(text: str, variables: Mapping[str, Any], secrets: Mapping[str, str]) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("secrets."):
            key = name.removeprefix("secrets.")
            if key not in secrets:
                raise StepFailed("unknown_variable", f"no secret named {key!r}")
            return secrets[key]
        if name not in variables:
            raise StepFailed("unknown_variable", f"no variable named {name!r} (yet)")
        v = variables[name]
        return v if isinstance(v, str) else json.dumps(v)

    return _PLACEHOLDER.sub(value, text)


def _deep(value: Any, variables: Mapping[str, Any], secrets: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return substitute(value, variables, secrets)
    if isinstance(value, list):
        return [_deep(v, variables, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _deep(v, variables, secrets) for k, v in value.items()}
    return value


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def compare(op: str, actual: Any, expected: Any, present: bool = True) -> bool:
    if op == "exists":
        return present
    if op == "not_exists":
        return not present
    if not present:
        return False
    if op in ("gt", "gte", "lt", "lte"):
        a, b = _number(actual), _number(expected)
        if a is None or b is None:
            return False
        return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]
    if op in ("equals", "not_equals"):
        same = actual == expected or (
            _number(actual) is not None and _number(actual) == _number(expected)
        )
        if not same and not isinstance(actual, dict | list):
            same = str(actual) == str(expected)
        return same if op == "equals" else not same
    text = actual if isinstance(actual, str) else json.dumps(actual)
    if op == "contains":
        return str(expected) in text
    if op == "not_contains":
        return str(expected) not in text
    if op == "matches":
        try:
            return re.search(str(expected), text) is not None
        except re.error:
            return False
    return False


def _shown(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text[:MAX_SHOWN]


class _Response:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes, ms: float) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.ms = ms
        self._json: Any = ...

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        if self._json is ...:
            try:
                self._json = json.loads(self.body)
            except ValueError:
                self._json = None
        return self._json


def _jsonpath(resp: _Response, path: str) -> tuple[bool, Any]:
    data = resp.json()
    if data is None and resp.body.strip() not in (b"null",):
        raise StepFailed("assertion_failed", f"the body is not JSON (for {path})")
    try:
        found = jsonpath.findall(path, data)
    except jsonpath.JSONPathError as exc:
        raise StepFailed("invalid_config", f"JSONPath {path}: {exc}") from None
    if not found:
        return False, None
    return True, found[0] if len(found) == 1 else found


def extract(resp: _Response, rule: Mapping[str, Any]) -> Any:
    source = rule.get("from", "jsonpath")
    if source == "jsonpath":
        present, value = _jsonpath(resp, str(rule.get("path", "$")))
    elif source == "header":
        value = resp.headers.get(str(rule.get("header", "")))
        present = value is not None
    elif source == "regex":
        m = re.search(str(rule.get("pattern", "")), resp.text)
        present = m is not None
        value = (m.group(1) if m and m.groups() else m.group(0)) if m else None
    elif source == "status":
        present, value = True, resp.status
    else:
        raise StepFailed("invalid_config", f"unknown extraction source {source!r}")
    if not present:
        raise StepFailed("extraction_failed", f"nothing to extract for {rule.get('var')!r}")
    return value


def check_assertion(resp: _Response, a: Mapping[str, Any]) -> str | None:
    """None when the assertion holds, else why not."""
    kind = a.get("type", "status")
    op = str(a.get("op", "equals"))
    expected = a.get("value")
    if kind == "status":
        wanted = a.get("in") or ([expected] if expected is not None else [a.get("equals")])
        if not any(compare("equals", resp.status, w) for w in wanted):
            return f"status {resp.status}, expected {wanted}"
        return None
    if kind == "latency":
        limit = _number(a.get("lt_ms", expected))
        if limit is None or resp.ms >= limit:
            return f"took {resp.ms:.0f} ms, limit {limit} ms"
        return None
    if kind == "jsonpath":
        path = str(a.get("path", "$"))
        present, actual = _jsonpath(resp, path)
        if not compare(op, actual, expected, present):
            got = _shown(actual) if present else "absent"
            return f"{path} is {got}, expected {op} {_shown(expected)}"
        return None
    if kind == "header":
        name = str(a.get("name", ""))
        actual = resp.headers.get(name)
        if not compare(op, actual, expected, actual is not None):
            return f"header {name} is {actual!r}, expected {op} {_shown(expected)}"
        return None
    if kind == "body":
        if not compare(op if op != "equals" else "contains", resp.text, expected):
            return f"body does not satisfy {op} {_shown(expected)}"
        return None
    return f"unknown assertion type {kind!r}"


async def _request(
    step: Mapping[str, Any],
    variables: dict[str, Any],
    secrets: Mapping[str, str],
    wait_s: float,
    verify: bool,
) -> _Response:
    url = substitute(str(step["url"]), variables, secrets)
    method = str(step.get("method") or "GET").upper()
    headers = {
        str(k): substitute(str(v), variables, secrets)
        for k, v in (step.get("headers") or {}).items()
    }
    body = step.get("body")
    kw: dict[str, Any] = {}
    if body not in (None, ""):
        body = _deep(body, variables, secrets)
        body_type = step.get("body_type") or ("json" if isinstance(body, dict | list) else "raw")
        if body_type == "json":
            kw["json"] = body if not isinstance(body, str) else json.loads(body)
        elif body_type == "form":
            kw["data"] = body if isinstance(body, dict) else str(body)
        else:
            kw["data"] = body if isinstance(body, str) else json.dumps(body)
    start = time.perf_counter()
    try:
        async with _session().request(
            method,
            url,
            headers=headers,
            allow_redirects=bool(step.get("follow_redirects", True)),
            timeout=aiohttp.ClientTimeout(total=wait_s),
            ssl=verify,
            **kw,
        ) as resp:
            data = await resp.content.read(MAX_BODY)
            return _Response(resp.status, resp.headers, data, (time.perf_counter() - start) * 1e3)
    except TimeoutError:
        raise StepFailed("timeout", f"no answer within {wait_s:.1f} s") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        kind, message = _classify(exc)
        raise StepFailed(kind, message) from None


def _redact(value: Any, secrets: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for s in secrets.values():
            if s:
                value = value.replace(s, MASK)
        return value
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    return value


async def scenario_probe(check: Check) -> ProbeOutcome:
    o = check.options
    steps = o.get("api_scenario_steps") or o.get("steps") or []
    secrets = {str(k): str(v) for k, v in (o.get("api_scenario_secrets") or {}).items()}
    verify = o.get("ssl_verify", True) is not False
    deadline = time.monotonic() + check.timeout
    variables: dict[str, Any] = {}
    outcomes: list[dict[str, Any]] = []
    total_ms = 0.0
    failure: tuple[str, str] | None = None
    for i, step in enumerate(steps):
        name = str(step.get("name") or f"step {i + 1}")
        if failure is not None:
            outcomes.append({"step": i + 1, "name": name, "status": "skipped"})
            continue
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise StepFailed("timeout", "the check's timeout ran out before this step")
            resp = await _request(
                step, variables, secrets, min(left, float(step.get("timeout") or left)), verify
            )
            total_ms += resp.ms
            problems = [p for a in step.get("assertions") or [] if (p := check_assertion(resp, a))]
            if not step.get("assertions") and not 200 <= resp.status <= 399:
                problems.append(f"status {resp.status}")
            if problems:
                raise StepFailed("assertion_failed", "; ".join(problems))
            for rule in step.get("extract") or []:
                variables[str(rule["var"])] = extract(resp, rule)
            outcomes.append(
                {
                    "step": i + 1,
                    "name": name,
                    "status": "passed",
                    "status_code": resp.status,
                    "latency_ms": round(resp.ms, 3),
                }
            )
        except StepFailed as exc:
            failure = (exc.kind, f"{name}: {exc}")
            entry: dict[str, Any] = {
                "step": i + 1,
                "name": name,
                "status": "failed",
                "error_kind": exc.kind,
                "message": str(exc)[:500],
            }
            outcomes.append(entry)
    details = _redact({"steps": outcomes, "variables": sorted(variables)}, secrets)
    if failure is not None:
        return ProbeOutcome(
            Status.DOWN,
            failure[0],
            _redact(failure[1][:500], secrets),
            latency_ms=total_ms,
            details=details,
        )
    return ProbeOutcome(Status.UP, latency_ms=total_ms, details=details)


default_registry.register("api_scenario", scenario_probe)
