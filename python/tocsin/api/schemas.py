"""Request bodies as pydantic models: they validate input (422 with the field at
fault) and are the single source the OpenAPI document will be generated from."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tocsin.api.errors import ValidationFailed

CHECK_TYPES = ("uptime",)


class CheckCreate(BaseModel):
    # Clients send the union of every type's fields: unknown ones are ignored.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    type: Literal["uptime"] = "uptime"
    description: str = Field(default="", max_length=2000)
    url: str = Field(max_length=2048)
    interval: int = Field(default=60, ge=1, le=86_400, description="seconds")
    timeout: int = Field(default=10, ge=1, le=3_600, description="seconds")
    is_active: bool = True
    expected_status_codes: list[int] = Field(default_factory=list, max_length=100)
    project_id: int | None = None
    org_id: int | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        if any(c.isspace() for c in v):
            raise ValueError("must not contain whitespace")
        try:
            parts.port  # noqa: B018  raises on a bad port
        except ValueError as exc:
            raise ValueError(f"invalid port: {exc}") from None
        return v

    @field_validator("expected_status_codes")
    @classmethod
    def _codes(cls, v: list[int]) -> list[int]:
        bad = [c for c in v if not 100 <= c <= 599]
        if bad:
            raise ValueError(f"status codes must be 100-599, got {bad}")
        return v


def parse(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(
            [
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
        ) from None
