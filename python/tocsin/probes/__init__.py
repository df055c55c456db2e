"""Probe plugins: `@tocsin.probe("type")` registers an async function that checks one
target and returns a `ProbeOutcome`. The engine runs them on its asyncio loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

from tocsin.models import Check, ProbeOutcome

ProbeFunc: TypeAlias = Callable[[Check], Awaitable[ProbeOutcome]]
Closer: TypeAlias = Callable[[], Awaitable[None]]

# Types the native core runs itself (rust_core/schedule.rs `ProbeKind`); they need no
# plugin. `noop` completes at dispatch and exists to measure the scheduler.
NATIVE_TYPES: dict[str, int] = {
    "noop": 1,
    "uptime": 2,
    "tcp": 3,
    "udp": 4,
    "dns": 5,
    "icmp": 6,
    "tls": 7,
    "heartbeat": 8,
}
PYTHON_KIND = 0


class UnknownProbeTypeError(ValueError):
    """No probe is registered for a check's type."""


class ProbeRegistry:
    def __init__(self) -> None:
        self._probes: dict[str, ProbeFunc] = {}
        self._closers: list[Closer] = []

    def register(self, name: str, func: ProbeFunc) -> None:
        if not name or name in NATIVE_TYPES:
            raise ValueError(f"probe type name {name!r} is reserved or empty")
        self._probes[name] = func

    def probe(self, name: str) -> Callable[[ProbeFunc], ProbeFunc]:
        def decorate(func: ProbeFunc) -> ProbeFunc:
            self.register(name, func)
            return func

        return decorate

    def on_close(self, closer: Closer) -> None:
        """Called when an engine using this registry closes (release sessions, pools)."""
        self._closers.append(closer)

    def get(self, name: str) -> ProbeFunc:
        try:
            return self._probes[name]
        except KeyError:
            raise UnknownProbeTypeError(f"no probe registered for type {name!r}") from None

    def kind(self, name: str) -> int:
        if name in NATIVE_TYPES:
            return NATIVE_TYPES[name]
        self.get(name)
        return PYTHON_KIND

    def types(self) -> list[str]:
        return sorted([*self._probes, *NATIVE_TYPES])

    async def aclose(self) -> None:
        for closer in self._closers:
            await closer()


default_registry = ProbeRegistry()


def probe(name: str) -> Callable[[ProbeFunc], ProbeFunc]:
    """Register an async probe for checks of type `name` in the default registry."""
    return default_registry.probe(name)
