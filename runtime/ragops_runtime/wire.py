"""Pieces of the HTTP API's schema shared by its routers (queries and jobs)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


NoNul = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
"""PostgreSQL text and JSONB cannot hold NUL: such input is refused by the schema, not the database."""

Filters = Annotated[
    dict[NoNul, NoNul | int | float | bool],
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
