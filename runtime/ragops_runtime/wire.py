"""The HTTP API's wire pieces shared by its routers and its server: request models, the caller's
identity and the one error shape.

Request models are strict: JSON's types are taken as they are, never coerced (`"5"` is not the
integer 5, `0` is not false), so a client's mistake is a 422 naming the field instead of a guess.
JSON has one number type, so `5.0` is the integer 5, as JSON Schema says (`TopK`). Every
error the runtime sends, from a route, an exception handler or the HTTP server itself
(server.py), is `{"error": {"code", "message"}}`, built here.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Annotated, Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from .protection.identity import ClientIdentity, client_identity


class WireModel(BaseModel):
    """A JSON object of the API: camelCase names, no unknown fields."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class WireRequest(WireModel):
    """A request body: strict, so JSON's types are taken as they are (see the module doc)."""

    model_config = ConfigDict(strict=True)


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


TopK = Annotated[int, Field(ge=1, le=200), BeforeValidator(_integral)]
"""Candidates to retrieve: an integer in a request, 5 or 5.0 (one JSON number), never 5.5 or "5".

The bounds are inside the type, before the validator, so the schema of an optional field keeps them.
"""

WireUUID = Annotated[uuid.UUID, Strict(False)]
"""A UUID in a request: JSON has no UUID type, so it arrives as a string and is parsed."""

NoNul = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
"""PostgreSQL text and JSONB cannot hold NUL: such input is refused by the schema, not the database."""


def _one_scalar(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        # One message, not one per member of the union.
        raise PydanticCustomError(
            "filter_value", "Input should be a string (without NUL), a number or a boolean"
        ) from None


FilterValue = Annotated[NoNul | int | float | bool, WrapValidator(_one_scalar)]

Filters = Annotated[
    dict[NoNul, FilterValue],
    # Keys are described by patternProperties; without this, JSON Schema would allow any other key
    # with any value, and the document would promise what the service refuses (found by schemathesis).
    Field(
        description="Only passages whose document metadata has these exact values.",
        json_schema_extra={"additionalProperties": False},
    ),
]


def query_text_field(max_query_chars: int) -> tuple[type[str], Any]:
    """A question's field with this runtime's length limit, so the OpenAPI document states it exactly."""
    return (
        str,
        Field(
            min_length=1,
            max_length=max_query_chars,
            pattern=r"^[^\x00]*$",
            description=f"The question, in natural language; at most {max_query_chars} characters.",
        ),
    )


def client_of(request: Request) -> ClientIdentity:
    """The identities of a request's caller (protection/identity.py), with this runtime's trusted header."""
    peer = request.client.host if request.client else None
    return client_identity(request.headers, peer, request.app.state.settings.trusted_client_header)


# ---- the one error shape -------------------------------------------------------------------------


class ErrorDetail(WireModel):
    code: str = Field(description="Machine-readable reason, e.g. rate_limited, database_unavailable.")
    message: str = Field(description="What went wrong, naming the field or limit.")


class ErrorBody(WireModel):
    error: ErrorDetail


def error_body(code: str, message: str) -> bytes:
    """The JSON bytes of an error; for the HTTP server, which answers below the app."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error(
    status: int,
    code: str,
    message: str,
    retry_after: float | None = None,
    *,
    close: bool = False,
) -> JSONResponse:
    """An error response; `close` ends the connection after it (the client may still be sending)."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        # Rounded up: a client retrying at a rounded-down time would be refused again.
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if close:
        headers["Connection"] = "close"
    body = ErrorBody(error=ErrorDetail(code=code, message=message)).model_dump(by_alias=True)
    return JSONResponse(status_code=status, content=body, headers=headers or None)
