"""The operator's probe endpoint address."""

from __future__ import annotations

import pytest

from ragops_operator.health import parse_address


@pytest.mark.parametrize(("address", "parsed"), [("0.0.0.0:8081", ("0.0.0.0", 8081)), ("[::]:9000", ("::", 9000))])
def test_the_health_address_is_host_and_port(address: str, parsed: tuple[str, int]) -> None:
    assert parse_address(address) == parsed


@pytest.mark.parametrize("address", ["8081", "host:", ":x"])
def test_other_addresses_are_refused_with_the_expected_shape(address: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address(address)
