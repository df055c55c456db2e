"""tocsin: a high-throughput uptime and incident platform with a native probe engine.

Embedding: `tocsin.Engine` schedules checks in the native core and runs probe plugins
(`@tocsin.probe("type")`) on your asyncio loop.
"""

from tocsin._core import InvalidCheckError
from tocsin.engine import Engine, EngineClosedError, EventStream
from tocsin.figures import SloState, figures, slo
from tocsin.maintenance import MaintenanceWindow
from tocsin.models import Check, ProbeOutcome, Result, Rollup, Status, StatusChange
from tocsin.probes import ProbeRegistry, UnknownProbeTypeError, default_registry, probe
from tocsin.probes import api_scenario as _api_scenario  # noqa: F401  registers `api_scenario`
from tocsin.probes import database as _database  # noqa: F401  registers `database`
from tocsin.probes import ftp as _ftp  # noqa: F401  registers `ftp`
from tocsin.probes import http as _http  # noqa: F401  registers `http_aiohttp`
from tocsin.probes import oidc as _oidc  # noqa: F401  registers `oidc`

__all__ = [
    "Check",
    "Engine",
    "EngineClosedError",
    "EventStream",
    "InvalidCheckError",
    "MaintenanceWindow",
    "ProbeOutcome",
    "ProbeRegistry",
    "Result",
    "Rollup",
    "SloState",
    "Status",
    "StatusChange",
    "UnknownProbeTypeError",
    "default_registry",
    "figures",
    "probe",
    "slo",
]
