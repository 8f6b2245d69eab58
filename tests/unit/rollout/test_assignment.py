"""Sticky assignment of clients to stable or canary: pure, so every replica agrees without talking."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from ragops_runtime.rollout import ServedSplit, assign, mirrors
from ragops_runtime.store import EmbeddingSpace, VersionRecord

CLIENTS = [f"client-{number}" for number in range(5000)]


def record(version: str) -> VersionRecord:
    return VersionRecord(
        id=int(version.removeprefix("v")),
        kb="docs",
        version=version,
        status="built",
        space=EmbeddingSpace(provider="hashing", model="hashing-v1", dimensions=8),
        chunk_table="t",
        settings={},
        manifest=None,
        gate=None,
        gate_passed=True,
        error=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        built_at=None,
    )


@pytest.mark.parametrize("weight", [1, 5, 10, 25, 50, 75, 90, 99])
def test_the_canary_share_is_within_3_points_of_the_weight_over_5000_clients(weight: int) -> None:
    share = sum(assign("rollout-7/step-1", weight, client) == "canary" for client in CLIENTS) / len(CLIENTS)
    assert abs(share * 100 - weight) <= 3, share


def test_zero_and_hundred_are_exact_and_no_split_is_stable() -> None:
    assert {assign("s", 0, client) for client in CLIENTS} == {"stable"}
    assert {assign("s", 100, client) for client in CLIENTS} == {"canary"}
    assert {assign(None, 50, client) for client in CLIENTS} == {"stable"}


def test_a_client_keeps_its_version_for_the_life_of_a_step() -> None:
    first = [assign("rollout-7/step-1", 30, client) for client in CLIENTS]
    again = [assign("rollout-7/step-1", 30, client) for client in CLIENTS]
    assert first == again


def test_a_new_split_id_reshuffles_who_is_in_the_canary() -> None:
    one = {client for client in CLIENTS if assign("rollout-7/step-1", 10, client) == "canary"}
    two = {client for client in CLIENTS if assign("rollout-7/step-2", 10, client) == "canary"}
    # Independent draws: about 10 % of one step's canary clients are in the next step's canary too.
    assert len(one & two) / len(one) < 0.2
    assert abs(len(two) / len(CLIENTS) - 0.10) <= 0.03


def test_raising_the_weight_under_the_same_split_id_only_adds_clients() -> None:
    at_10 = {client for client in CLIENTS if assign("rollout-7", 10, client) == "canary"}
    at_50 = {client for client in CLIENTS if assign("rollout-7", 50, client) == "canary"}
    assert at_10 < at_50


def test_shadows_sample_queries_independently_of_the_assignment() -> None:
    queries = [uuid.UUID(int=number * 7919 + 1) for number in range(5000)]
    shadowed = [mirrors("rollout-7/step-1", 25, query) for query in queries]
    assert abs(sum(shadowed) / len(queries) * 100 - 25) <= 3
    assert not any(mirrors("rollout-7/step-1", 0, query) for query in queries)
    assert all(mirrors("rollout-7/step-1", 100, query) for query in queries)
    assert not any(mirrors(None, 100, query) for query in queries)


def test_served_split_routes_clients_and_shadows_only_with_a_candidate() -> None:
    stable, canary = record("v1"), record("v2")
    alone = ServedSplit(stable=stable)
    assert all(alone.route(client) == ("stable", stable) for client in CLIENTS[:200])
    assert alone.mirrors(uuid.uuid4()) is None and alone.versions == ("v1",)
    split = ServedSplit(stable=stable, canary=canary, canary_weight=40, shadow_percent=100, split_id="r/1")
    routed = [split.route(client) for client in CLIENTS]
    assert {role for role, _ in routed} == {"stable", "canary"}
    assert all(version is (canary if role == "canary" else stable) for role, version in routed)
    assert split.mirrors(uuid.uuid4()) is canary and split.versions == ("v1", "v2")
