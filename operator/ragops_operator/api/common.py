"""Building blocks shared by the ragops.dev/v1alpha1 kinds.

This module is the CRD contract's vocabulary: the base model, the cross-field `Rule` that is
both a CEL rule in the CRD and a pydantic validator, and types (durations, quantities, secret
references, conditions) used by both kinds. It must stay pure: no Kubernetes client, no Kopf,
no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP = "ragops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, declared once and enforced in two places.

    The apiserver enforces `cel` through `x-kubernetes-validations`; pydantic enforces
    `holds` when the operator or the CLI parses a spec, so both reject the same objects.
    `holds` is None only for transition rules (`oldSelf`), which have no meaning outside
    an update. `field_path` (relative, e.g. ".rerankTopK") makes the apiserver name the
    offending field in its error instead of the object that carries the rule.
    """

    cel: str
    message: str
    field_path: str | None = None
    holds: Callable[[Any], bool] | None = None

    def to_validation(self) -> dict[str, str]:
        validation = {"rule": self.cel, "message": self.message}
        if self.field_path:
            validation["fieldPath"] = self.field_path
        return validation


class ApiModel(BaseModel):
    """Base of every spec model: camelCase on the wire, immutable, unknown fields refused.

    Unknown fields are refused rather than dropped because a misspelt field silently
    ignored is a setting the user believes is applied and is not.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        for rule in type(self).rules:
            if rule.holds is not None and not rule.holds(self):
                where = f"{rule.field_path.lstrip('.')}: " if rule.field_path else ""
                raise ValueError(f"{where}{rule.message}")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [rule.to_validation() for rule in cls.rules]
        return schema


class StatusModel(BaseModel):
    """Base of status models: written by the operator, so unknown fields are ignored on read.

    Ignoring (not refusing) keeps an older operator able to read a status written by a
    newer one during an upgrade.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[
    str,
    StringConstraints(pattern=r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$", max_length=32),
]
"""A Go-style duration ("15s", "5m", "1h30m"), the form CEL's duration() and kubectl users know."""


def parse_duration(value: str) -> timedelta:
    """Parses a `Duration` string; the pattern above has already vetted its shape."""
    seconds = 0.0
    position = 0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(value) or not value:
        raise ValueError(f"not a duration: {value!r} (expected e.g. 15s, 5m, 1h30m)")
    return timedelta(seconds=seconds)


_QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity ("500m", "1Gi", 2), as in a container's resources."""

DnsLabel = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", min_length=1, max_length=63),
]
"""An RFC 1123 label: what Kubernetes accepts as a name of most objects."""

DnsSubdomain = Annotated[
    str,
    StringConstraints(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        min_length=1,
        max_length=253,
    ),
]
"""An RFC 1123 subdomain: what Kubernetes accepts as the name of a ConfigMap, Secret or CR."""

HttpUrl = Annotated[
    str,
    StringConstraints(pattern=r"^https?://[^\s/$.?#][^\s]*$", min_length=8, max_length=2048),
]
"""An http(s) URL. A pattern, not pydantic's URL type, so the value round-trips unchanged."""


class SecretKeyRef(ApiModel):
    """A key of a Secret in the same namespace. Secrets are only ever passed by reference."""

    name: DnsSubdomain = Field(description="Name of the Secret, in the namespace of this resource.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key within the Secret whose value is used.",
    )


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the same namespace."""

    name: DnsSubdomain = Field(description="Name of the ConfigMap, in the namespace of this resource.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key within the ConfigMap that holds the data.",
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """One aspect of the resource's state, shaped like metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of the condition, in CamelCase (e.g. Ready, GatePassed).",
    )
    status: ConditionStatus = Field(description="Whether the condition holds: True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable CamelCase reason for the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details of the last transition.")
    last_transition_time: datetime = Field(description="When the condition last changed status (RFC 3339).")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The .metadata.generation the condition was computed from.",
    )


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]
