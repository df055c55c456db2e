"""The REST API (Falcon, ASGI)."""
