"""Names and labels of every object the operator creates: the one place they are derived.

Kubernetes names derived from custom-resource names must stay valid and distinct whatever the
user named the resource: a RagDeployment may be called anything up to 253 characters with dots,
while a Service name is a 63-character DNS-1035 label. Truncation and hashing happen here only.
Pure functions; this module must not do I/O, read the clock or import a Kubernetes client.
"""

from __future__ import annotations

import hashlib
import re

APP_NAME = "ragops"
MANAGED_BY = "ragops-operator"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
KIND_LABEL = "ragops.dev/kind"

MAX_NAME_LENGTH = 63
_HASH_LENGTH = 8

# DNS-1035 (what a Service name must be) is DNS-1123 with a leading letter; producing it
# everywhere lets one name serve every kind of child.
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NOT_NAME_CHARACTER = re.compile(r"[^a-z0-9-]")
_NOT_LABEL_CHARACTER = re.compile(r"[^-A-Za-z0-9_.]")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]


def is_dns_label(name: str, max_length: int = MAX_NAME_LENGTH) -> bool:
    """Whether `name` is a DNS-1035 label (hence also a DNS-1123 label) of at most `max_length`."""
    return len(name) <= max_length and _DNS_1035_LABEL.match(name) is not None


def child_name(parent: str, suffix: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """`<parent>-<suffix>`, or when that is not a valid name, `<parent prefix>-<hash>-<suffix>`.

    The hash covers the full `<parent>-<suffix>`, so parents differing only past the cut (or
    only by a dot versus a dash) get distinct names. The plain form is kept whenever it is valid
    so `kubectl get` shows the names users expect. The result is always a DNS-1035 label, which
    is also a DNS-1123 label; it starts with a letter because Service names must.
    """
    if not is_dns_label(suffix) or len(suffix) > max_length - _HASH_LENGTH - 3:
        raise ValueError(f"suffix {suffix!r} must be a short DNS-1035 label")
    plain = f"{parent}-{suffix}"
    if is_dns_label(plain, max_length):
        return plain
    tail = f"-{_digest(plain)}-{suffix}"
    body = _NOT_NAME_CHARACTER.sub("-", parent.lower())
    if not body[:1].isalpha():
        # "r" for ragops: a name may not start with a digit or a dash.
        body = "r" + body
    body = body[: max_length - len(tail)].rstrip("-")
    return body + tail


def label_value(value: str) -> str:
    """`value` as a label value: unchanged when valid, else truncated to 63 with a hash appended."""
    if len(value) <= MAX_NAME_LENGTH and _LABEL_VALUE.match(value):
        return value
    tail = f"-{_digest(value)}"
    # A label value must start and end alphanumeric; the hash supplies the end.
    body = _NOT_LABEL_CHARACTER.sub("-", value).lstrip("-_.")[: MAX_NAME_LENGTH - len(tail)]
    return body + tail if body else _digest(value)


def selector_labels(instance: str, component: str) -> dict[str, str]:
    """The labels a selector matches on: only ones that never change for the object's lifetime.

    A Deployment's selector is immutable, so nothing that could change (a version, a hash, the
    operator's release) may appear here.
    """
    return {
        NAME_LABEL: APP_NAME,
        INSTANCE_LABEL: label_value(instance),
        COMPONENT_LABEL: component,
    }


def common_labels(kind_name: str, instance: str, component: str) -> dict[str, str]:
    """Labels on every object the operator creates for the custom resource `kind_name`/`instance`.

    `kind_name` is the owning custom resource's kind (e.g. RagDeployment), recorded as
    `ragops.dev/kind` so `kubectl get all -l ragops.dev/kind=RagDeployment` finds the children.
    """
    return {
        **selector_labels(instance, component),
        MANAGED_BY_LABEL: MANAGED_BY,
        PART_OF_LABEL: APP_NAME,
        KIND_LABEL: label_value(kind_name),
    }
