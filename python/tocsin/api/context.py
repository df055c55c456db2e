"""What every API module is given: the store, the engine, the live event hub and the
data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tocsin.engine import Engine
from tocsin.events import EventHub
from tocsin.store.base import Store


@dataclass(slots=True)
class AppContext:
    store: Store
    engine: Engine
    events: EventHub
    data_dir: Path
