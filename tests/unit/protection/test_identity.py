"""The identities of a request: which the operator can trust, which only the client vouches for."""

from __future__ import annotations

import pytest

from ragops_runtime.protection.identity import ClientIdentity, client_identity, rater_digest


@pytest.mark.parametrize(
    ("headers", "trusted_header", "expected"),
    [
        # No trusted header configured: the peer address, whatever the client claims.
        ({"x-client-id": "me", "x-forwarded-for": "1.1.1.1"}, None, ClientIdentity("10.0.0.9", "me")),
        ({}, None, ClientIdentity("10.0.0.9", None)),
        # Configured: its value; a list is read from the right (the nearest proxy's entry).
        ({"x-real-ip": "203.0.113.7"}, "X-Real-IP", ClientIdentity("203.0.113.7", None)),
        ({"x-forwarded-for": "6.6.6.6, 203.0.113.7"}, "X-Forwarded-For", ClientIdentity("203.0.113.7", None)),
        ({"x-forwarded-for": "203.0.113.7,"}, "X-Forwarded-For", ClientIdentity("10.0.0.9", None)),
        # Configured but absent (a request that bypassed the gateway): the peer address.
        ({"x-client-id": "me"}, "X-Real-IP", ClientIdentity("10.0.0.9", "me")),
        # X-Client-Id as the trusted header: a gateway that authenticates callers sets it.
        ({"x-client-id": "team-a"}, "X-Client-Id", ClientIdentity("team-a", "team-a")),
        ({"x-client-id": "  "}, None, ClientIdentity("10.0.0.9", None)),
    ],
)
def test_client_identity(headers: dict[str, str], trusted_header: str | None, expected: ClientIdentity) -> None:
    assert client_identity(headers, "10.0.0.9", trusted_header) == expected


def test_the_sticky_key_prefers_the_clients_own_id() -> None:
    assert ClientIdentity("10.0.0.9", "session-1").sticky_key == "session-1"
    assert ClientIdentity("10.0.0.9", None).sticky_key == "10.0.0.9"


def test_long_values_are_hashed_so_keys_stay_small() -> None:
    identity = client_identity({"x-real-ip": "a" * 10_000, "x-client-id": "b" * 10_000}, None, "X-Real-IP")
    assert identity.trusted.startswith("sha256:") and len(identity.trusted) == 71
    assert identity.label is not None and identity.label.startswith("sha256:") and identity.trusted != identity.label
    assert client_identity({}, None, None).trusted == "unknown"


def test_a_rater_is_stored_as_a_digest() -> None:
    digest = rater_digest(ClientIdentity("203.0.113.7"))
    assert len(digest) == 32 and set(digest) <= set("0123456789abcdef")
    assert digest == rater_digest(ClientIdentity("203.0.113.7", "another label"))  # the trusted part only
