"""Who a request comes from: one function for the rate limit, feedback raters and sticky assignment.

A request carries two identities, of two trust levels:

- `trusted`: what the operator controls. The value of the configured trusted header, which the
  ingress or gateway in front of the runtime sets (overwriting whatever the client sent), else
  the TCP peer address. A client cannot change it by changing a header, so the rate limit and
  the one-rating-per-rater rule are keyed on it. Behind a proxy without a trusted header every
  client has the proxy's address: one shared bucket, one rater (safe, but configure the header).
- `sticky_key`: `X-Client-Id` when the client sends one (a session or user id, stable when the
  client's address changes), else `trusted`. It only chooses which version answers during a
  rollout and labels analytics: a client choosing its own bucket gains nothing but consistency.
  It is never a limiter key, unless `X-Client-Id` is itself the configured trusted header (a
  gateway that authenticates callers and sets it).

A list-valued trusted header (`X-Forwarded-For: client, proxy1`) is read from the right: the last
entry is the one the nearest proxy, the trusted one, added; entries to its left are whatever the
client claimed. Long values are hashed, so a hostile header cannot make the limiter's keys large.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

CLIENT_ID_HEADER = "x-client-id"
MAX_KEY_CHARS = 128
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""An HTTP header name (an RFC 9110 token)."""


@dataclass(frozen=True)
class ClientIdentity:
    trusted: str
    """The trusted header's value, else the peer address: the rate limit's and the raters' key."""
    label: str | None = None
    """X-Client-Id as sent (bounded): stickiness and analytics only."""

    @property
    def sticky_key(self) -> str:
        """Whose version answers during a rollout: the client's own id when it gives one."""
        return self.label or self.trusted


def client_identity(headers: Mapping[str, str], peer: str | None, trusted_header: str | None) -> ClientIdentity:
    """The identities of a request with `headers` (names lower-cased) from `peer` (its address)."""
    trusted = None
    if trusted_header:
        value = headers.get(trusted_header.lower(), "")
        trusted = value.rsplit(",", 1)[-1].strip() or None
    label = headers.get(CLIENT_ID_HEADER, "").strip() or None
    return ClientIdentity(
        trusted=_bounded(trusted or peer or "unknown"), label=_bounded(label) if label is not None else None
    )


def rater_digest(identity: ClientIdentity) -> str:
    """How a rater is stored: a digest of the trusted identity, not the address in clear.

    Unsalted, so a digest of an IPv4 address can be found by trying them all: the log stays
    access-controlled data; the digest keeps addresses out of casual reads and exports.
    """
    return hashlib.sha256(identity.trusted.encode("utf-8")).hexdigest()[:32]


def _bounded(value: str) -> str:
    if len(value) <= MAX_KEY_CHARS:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()
