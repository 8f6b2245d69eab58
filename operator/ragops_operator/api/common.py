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
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

GROUP = "ragops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Rule:
    """A rule, declared once and enforced in two places.

    The apiserver enforces `cel` through `x-kubernetes-validations`; pydantic enforces
    `holds` when the operator or the CLI parses a spec, so both reject the same objects.
    `holds` is None only for transition rules (`oldSelf`), which have no meaning outside
    an update. `field_path` (relative, e.g. ".rerankTopK") makes the apiserver name the
    offending field in its error instead of the object that carries the rule.

    In a model's `rules` a rule relates the model's fields (`self` is the object); as metadata of
    a type, `Annotated[str, Rule(...)]`, it checks each value of that type (`self` is the value).
    CEL and Python regular expressions are written once, as shared constants, in the syntax both
    RE2 and Python's `re` read alike (no look-around, no `\\d`, no `\\s`).
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

    # As metadata of a type (`Annotated[str, Rule(...)]`) a rule checks one value, wherever the
    # type is used: `self` in `cel` is that value, and `holds` is called with it.

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        if self.holds is None:
            return schema
        return core_schema.no_info_after_validator_function(self._check_value, schema)

    def _check_value(self, value: Any) -> Any:
        if self.holds is not None and not self.holds(value):
            raise ValueError(self.message)
        return value

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        target = handler.resolve_ref_schema(json_schema)
        target.setdefault("x-kubernetes-validations", []).append(self.to_validation())
        return json_schema


class RuleViolation(ValueError):
    """A cross-field rule that does not hold; `field` (relative to the model, may be empty) says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class ApiModel(BaseModel):
    """Base of every spec model: camelCase on the wire, immutable, unknown fields refused.

    Unknown fields are refused rather than dropped because a misspelt field silently
    ignored is a setting the user believes is applied and is not. Strict types, as the apiserver's:
    "5" is not an integer and `true` is not a number.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        strict=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        for rule in type(self).rules:
            if rule.holds is not None and not rule.holds(self):
                raise RuleViolation((rule.field_path or "").lstrip("."), rule.message)
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


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[
    str,
    StringConstraints(
        # Each unit once, largest first, as Go prints durations ("1h30m", "90s", "1.5h", "250ms").
        # The digit caps keep every value inside CEL's duration range (about 290 years) and
        # Python's timedelta, so `duration(self.x)` in a rule can never fail on a huge number.
        pattern=(
            r"^([0-9]{1,6}(\.[0-9]{1,9})?h)?([0-9]{1,7}(\.[0-9]{1,9})?m)?"
            r"([0-9]{1,9}(\.[0-9]{1,9})?s)?([0-9]{1,9}(\.[0-9]{1,9})?ms)?$"
        ),
        min_length=2,
        max_length=64,
    ),
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


def duration_between(field: str, attribute: str, low: str, high: str) -> Rule:
    """`low <= field <= high`, both durations: in CEL for the apiserver, in Python for the operator.

    Every Duration a reconcile divides by, sleeps on or renders into PromQL has a floor here, so a
    spec like `window: 0s` is refused by the apiserver instead of failing every pass.
    """
    floor, ceiling = parse_duration(low), parse_duration(high)
    return Rule(
        cel=f"duration(self.{field}) >= duration('{low}') && duration(self.{field}) <= duration('{high}')",
        message=f"{field} must be between {low} and {high}",
        field_path=f".{field}",
        holds=lambda model: floor <= parse_duration(getattr(model, attribute)) <= ceiling,
    )


# What Kubernetes parses as a quantity (apimachinery's parseQuantityString), without the sign: no
# resource is negative. Exponents are integers, as the parser requires.
_QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]{1,3})?$"
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]{1,3})?")
_QUANTITY_SCALE = {
    "": Decimal(1),
    **{
        suffix: Decimal(10) ** power
        for suffix, power in zip("numkMGTPE", (-9, -6, -3, 3, 6, 9, 12, 15, 18), strict=True)
    },
    **{f"{prefix}i": Decimal(2) ** (10 * (n + 1)) for n, prefix in enumerate("KMGTPE")},
}
QUANTITY_MAX_LENGTH = 32

Quantity = Annotated[
    Annotated[int, Field(ge=0)]
    | Annotated[str, StringConstraints(pattern=_QUANTITY_PATTERN, max_length=QUANTITY_MAX_LENGTH)],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _QUANTITY_PATTERN,
            "maxLength": QUANTITY_MAX_LENGTH,
            "minimum": 0,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A non-negative Kubernetes resource quantity ("500m", "1Gi", 2), as in a container's resources."""


def parse_quantity(value: int | str) -> Decimal:
    """The exact value of a `Quantity` (what CEL's quantity() compares): "1Gi" -> 1073741824."""
    if isinstance(value, int):
        return Decimal(value)
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ValueError(f"not a quantity: {value!r} (expected e.g. 500m, 1Gi, 2)")
    number, suffix = match.group(1), match.group(2) or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    return Decimal(number) * _QUANTITY_SCALE[suffix]


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

Text = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f-\x9f]*$", max_length=256)]
"""A short free-form name (a model's): any Unicode but control characters, so no newline or
escape sequence reaches a log line, a header or an environment variable."""

HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", min_length=1, max_length=64)]
"""An HTTP header name (an RFC 9110 token)."""

ConfigMapKey = Annotated[
    str,
    # Kubernetes' own rule (IsConfigMapKey): [-._a-zA-Z0-9]+, but not ".", ".." or a name starting
    # with "..": such a key would be a path out of the directory it is mounted in.
    StringConstraints(pattern=r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$", min_length=1, max_length=253),
]
"""A key of a ConfigMap or Secret, which is also a file name where the object is mounted."""

_PARENT_SEGMENT = r"(^|/)[.][.](/|$)"
_PARENT = re.compile(_PARENT_SEGMENT)
_NO_PARENT = Rule(
    cel=f"!self.matches(r'{_PARENT_SEGMENT}')",
    message="must not contain a '..' segment: it stays within the volume",
    holds=lambda value: _PARENT.search(value) is None,
)
_CONTROL = r"\x00-\x1f\x7f-\x9f"

VolumePath = Annotated[
    str,
    StringConstraints(pattern=rf"^/[^{_CONTROL}]*$", min_length=1, max_length=1024),
    _NO_PARENT,
]
"""An absolute directory within a mounted volume; `..` cannot lead out of it."""

_NAMES_A_FILE = re.compile(r"[^/.]")
FileGlob = Annotated[
    str,
    StringConstraints(pattern=rf"^[^/{_CONTROL}][^{_CONTROL}]*$", min_length=1, max_length=256),
    _NO_PARENT,
    Rule(
        cel="self.matches(r'[^/.]')",
        message="must name files, not only '.' and '/'",
        holds=lambda value: _NAMES_A_FILE.search(value) is not None,
    ),
]
"""A glob relative to a directory ("**/*.md"); it can match nothing outside that directory."""

_HOST_LABEL = r"[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?"
_URL_PATTERN = (
    # No user info (credentials belong in Secrets), no whitespace, control or non-ASCII characters:
    # one unambiguous host, parsed alike by Go, Python and every HTTP client.
    rf"^https?://({_HOST_LABEL}(\.{_HOST_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(:[0-9]{{1,5}})?([/?#][!-~]*)?$"
)
_IPV4_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_LAST_LABEL_NUMERIC = r"^https?://([^/?#:\[\]]*\.)?(0[xX][0-9a-fA-F]*|[0-9]+)\.?([:/?#]|$)"
_DOTTED_QUAD = rf"^https?://{_IPV4_OCTET}(\.{_IPV4_OCTET}){{3}}([:/?#]|$)"
_LAST_LABEL_NUMERIC_RE, _DOTTED_QUAD_RE = re.compile(_LAST_LABEL_NUMERIC), re.compile(_DOTTED_QUAD)

HttpUrl = Annotated[
    str,
    StringConstraints(pattern=_URL_PATTERN, min_length=8, max_length=2048),
    # "http://2852039166/" and "http://0xa9fea9fe/" are 169.254.169.254 to most resolvers: an IPv4
    # address must be written as a plain dotted quad, so the address checks below see it.
    Rule(
        cel=f"!self.matches(r'{_LAST_LABEL_NUMERIC}') || self.matches(r'{_DOTTED_QUAD}')",
        message="an IPv4 host must be a dotted quad such as 10.0.0.1 (no octal, hex or integer forms)",
        holds=lambda url: _LAST_LABEL_NUMERIC_RE.search(url) is None or _DOTTED_QUAD_RE.search(url) is not None,
    ),
]
"""An http(s) URL without credentials. A pattern, not pydantic's URL type, so the value round-trips unchanged."""

LINK_LOCAL_HOSTS = (
    r"169\.254\.[0-9]{1,3}\.[0-9]{1,3}",  # IPv4 link-local: AWS, Azure, GCP, OpenStack metadata, ECS, EKS Pod Identity
    r"100\.100\.100\.200",  # Alibaba Cloud metadata
    r"168\.63\.129\.16",  # Azure WireServer
    r"192\.0\.0\.192",  # Oracle Cloud metadata
    r"metadata",  # GCE's short name
    r"metadata\.google\.internal",
    r"metadata\.goog",
    r"metadata\.tencentyun\.com",
    r"instance-data",  # EC2's name for 169.254.169.254
    r"instance-data\.ec2\.internal",
    r"\[fe[89ab][0-9a-f]:[^\]]*\]",  # IPv6 link-local, fe80::/10
    r"\[fd00:0?ec2:[^\]]*\]",  # AWS IMDS and Pod Identity over IPv6, fd00:ec2::/32
    r"\[[0:]*ffff:[^\]]*\]",  # IPv4-mapped IPv6 (::ffff:169.254.169.254): any IPv4 in disguise
    r"\[0{0,2}64:ff9b:[^\]]*\]",  # NAT64 (64:ff9b::/96): likewise
    r"\[[^\]]*\.[^\]]*\]",  # any IPv6 literal spelling an IPv4 address in dotted form
)
_LINK_LOCAL_URL = r"(?i)^https?://(" + "|".join(LINK_LOCAL_HOSTS) + r")\.?([:/?#]|$)"
_LINK_LOCAL_URL_RE = re.compile(_LINK_LOCAL_URL)


def is_link_local_url(url: str) -> bool:
    """Whether `url` names a link-local or cloud metadata address (see LINK_LOCAL_HOSTS)."""
    return _LINK_LOCAL_URL_RE.search(url) is not None


ALLOW_LINK_LOCAL_DESCRIPTION = (
    "Allow {field} to name a link-local or cloud metadata address (169.254.0.0/16, fe80::/10, "
    "fd00:ec2::/32, metadata.google.internal, 100.100.100.200, 168.63.129.16 ...). Off or omitted, "
    "such URLs are refused: a spec must not make ragops fetch a node's cloud credentials. Names that "
    "resolve there are not caught by this check; egress policy is the defence for those."
)


def not_link_local(field: str, attribute: str) -> Rule:
    """Refuses a URL in `field` that names a metadata address, unless the sibling allowLinkLocal is set."""
    return Rule(
        cel=(
            f"(has(self.allowLinkLocal) && self.allowLinkLocal) || !has(self.{field}) || "
            f"!self.{field}.matches(r'{_LINK_LOCAL_URL}')"
        ),
        message="must not name a link-local or cloud metadata address unless allowLinkLocal is true",
        field_path=f".{field}",
        holds=lambda model: (
            bool(model.allow_link_local)
            or getattr(model, attribute) is None
            or not is_link_local_url(getattr(model, attribute))
        ),
    )


_IMAGE_DOMAIN = r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*(:[0-9]{1,5})?"
_IMAGE_PATH = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
_IMAGE_TAG = r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}"
_IMAGE_DIGEST = r"[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

ImageReference = Annotated[
    str,
    StringConstraints(
        # The grammar of distribution/reference: [registry[:port]/]path[:tag][@digest].
        pattern=rf"^({_IMAGE_DOMAIN}/)?{_IMAGE_PATH}(/{_IMAGE_PATH})*(:{_IMAGE_TAG})?(@{_IMAGE_DIGEST})?$",
        min_length=1,
        max_length=512,
    ),
]
"""A container image reference ("ghcr.io/acme/ragops:1.2", "...@sha256:<hex>"); no whitespace."""

_RESOURCE_NAME = (
    # What a container may request: the standard resources, or a domain-prefixed extended one.
    r"^(cpu|memory|ephemeral-storage|hugepages-[0-9]+([KMGTPE]i|[kMGTPE])?"
    r"|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])$"
)
_RESOURCE_NAME_RE = re.compile(_RESOURCE_NAME)


def _is_resource_name(name: str) -> bool:
    return (
        _RESOURCE_NAME_RE.search(name) is not None and not name.startswith("requests.") and "kubernetes.io/" not in name
    )


ResourceList = Annotated[
    dict[str, Quantity],
    Field(max_length=16),
    Rule(
        cel=(
            f"self.all(k, k.matches(r'{_RESOURCE_NAME}') && !k.startsWith('requests.') && "
            "!k.contains('kubernetes.io/'))"
        ),
        message=(
            "resource names are cpu, memory, ephemeral-storage, hugepages-<size> or a domain-prefixed "
            "extended resource such as example.com/gpu"
        ),
        holds=lambda resources: all(_is_resource_name(name) for name in resources),
    ),
]
"""Resource name -> quantity, as a container's `requests` or `limits`."""


class SecretKeyRef(ApiModel):
    """A key of a Secret in the same namespace. Secrets are only ever passed by reference."""

    name: DnsSubdomain = Field(description="Name of the Secret, in the namespace of this resource.")
    key: ConfigMapKey = Field(description="Key within the Secret whose value is used.")


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the same namespace."""

    name: DnsSubdomain = Field(description="Name of the ConfigMap, in the namespace of this resource.")
    key: ConfigMapKey = Field(description="Key within the ConfigMap that holds the data.")


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
