"""What every API area is given: the server's services, built once by the composition
root (tocsin/services.py). Areas register routes over these; they build nothing."""

from __future__ import annotations

from tocsin.services import Services as AppContext

__all__ = ["AppContext"]
