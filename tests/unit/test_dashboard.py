"""The dashboard's pure parts: the page state built from API objects, the chart lines and queries.

The server, the page and its buttons against a real apiserver, operator, Prometheus and browser are
in tests/integration/test_dashboard.py.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ragops_operator.dashboard.view import (
    available_actions,
    build_snapshot,
    chart_rate_window,
    chart_series,
    chart_step,
)
from ragops_operator.prometheus import chart_queries
from tests.unit.test_plugin import IN_FLIGHT, NOW, canary_object

STATIC = Path(__file__).resolve().parents[2] / "operator" / "ragops_operator" / "dashboard" / "static"


def version(name: str, created: str, *, kb: str = "docs", passed: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "prod", "creationTimestamp": created},
        "spec": {"knowledgeBase": kb, "goldenSet": {"k": 3, "thresholds": {"recallAtK": 0.9}}},
        "status": {
            "phase": "Ready" if passed else "Failed",
            "documents": 12,
            "chunks": 80,
            "gate": {
                "passed": passed,
                "cases": 20,
                "failedMetrics": [] if passed else ["recallAtK=0.7<0.9"],
                "metrics": {"precisionAtK": 0.5, "recallAtK": 0.95 if passed else 0.7, "mrr": 0.9, "ndcgAtK": 0.8},
            },
        },
    }


def event(reason: str, message: str, at: str, *, name: str = "docs-canary", uid: str = "u1") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "prod"},
        "involvedObject": {"kind": "RagDeployment", "name": name, "uid": uid},
        "reason": reason,
        "message": message,
        "type": "Warning",
        "lastTimestamp": at,
    }


def deployment(rollout: dict[str, Any]) -> dict[str, Any]:
    obj = canary_object(copy.deepcopy(rollout))
    obj["metadata"]["uid"] = "u1"
    obj["status"]["history"] = [
        {
            "revision": n,
            "kbVersion": v,
            "runtimeHash": "a",
            "promotedAt": f"2026-03-01T{7 + n:02d}:00:00Z",
            "outcome": o,
        }
        for n, v, o in ((1, "docs-v0", "KnownGood"), (2, "docs-bad", "RolledBack"), (3, "docs-v1", "KnownGood"))
    ]
    obj["status"]["lastKnownGoodVersion"] = "docs-v1"
    return obj


def test_an_in_flight_canary_shows_steps_weight_time_left_and_the_analysis() -> None:
    rollout = {**IN_FLIGHT, "stepStartedAt": "2026-03-02T09:28:00+00:00"}  # analysis 5m, 2m in
    card = build_snapshot([deployment(rollout)], [], [], NOW)["deployments"][0]
    assert (card["key"], card["serving"], card["desired"], card["strategy"]) == (
        "prod/docs-canary",
        "docs-v1",
        "docs-v2",
        "canary",
    )
    view = card["rollout"]
    assert (view["stable"], view["canary"], view["weight"], view["shadowPercent"]) == ("docs-v1", "docs-v2", 10, 50.0)
    assert [s["state"] for s in view["steps"]] == ["done", "done", "running", "-", "-", "-"]
    assert view["steps"][2]["text"] == "analysis 5m" and (view["currentStep"], view["stepCount"]) == (3, 6)
    assert view["stepSecondsLeft"] == 180.0
    assert view["timeoutSecondsLeft"] == 3600 - 300  # started 5 minutes ago, timeout 1h
    rows = {o["name"]: o for o in view["analysis"]["objectives"]}
    assert rows["p95LatencyMs"]["stable"] == 301.2 and rows["p95LatencyMs"]["canary"] == 320.0
    assert rows["goldenRecall"]["source"] == "probe" and view["analysis"]["sloVerdict"] == "Met"
    assert card["actions"] == {
        "promote": True,
        "promote-full": True,
        "pause": True,
        "resume": False,
        "abort": True,
        "retry": False,
    }


def test_a_held_rollout_s_clock_stops_and_held_time_is_not_counted_by_the_timeout() -> None:
    rollout = {
        **IN_FLIGHT,
        "phase": "Paused",
        "pauseReason": "Manual",
        "stepStartedAt": "2026-03-02T09:28:00+00:00",
        "pausedAt": "2026-03-02T09:29:00+00:00",  # 30 s before NOW
        "heldSeconds": 60.0,
    }
    view = build_snapshot([deployment(rollout)], [], [], NOW)["deployments"][0]["rollout"]
    assert view["stepSecondsLeft"] == 240.0  # frozen at the pause: 5m - 1m
    assert view["timeoutSecondsLeft"] == 3600 - (240 - 60)  # 4 minutes to the pause, 1 of them held before
    assert [s["state"] for s in view["steps"]][2] == "paused"
    actions = build_snapshot([deployment(rollout)], [], [], NOW)["deployments"][0]["actions"]
    assert actions["resume"] and not actions["pause"] and actions["abort"]


def test_an_aborted_rollout_offers_retry_only_and_says_why() -> None:
    rollout = {
        **IN_FLIGHT,
        "phase": "Aborted",
        "weight": 0,
        "abort": {"reason": "ManualAbort", "message": "aborted by hand", "at": "2026-03-02T09:29:00+00:00"},
    }
    card = build_snapshot([deployment(rollout)], [], [], NOW)["deployments"][0]
    assert [k for k, on in card["actions"].items() if on] == ["retry"]
    assert card["rollout"]["stepSecondsLeft"] is None and card["rollout"]["timeoutSecondsLeft"] is None
    assert [s["state"] for s in card["rollout"]["steps"]][2] == "aborted"
    assert card["rollbacks"] == [
        {
            "at": "2026-03-02T09:29:00+00:00",
            "kind": "RolloutAborted",
            "message": "ManualAbort: aborted by hand",
            "count": 1,
        }
    ]


def test_rollbacks_carry_their_reasons_from_events_and_the_abort_is_not_repeated() -> None:
    rollout = {
        **IN_FLIGHT,
        "phase": "Aborted",
        "abort": {"reason": "AnalysisFailed", "message": "p95 Fail", "at": "2026-03-02T09:29:00Z"},
    }
    events = [
        event("RolledBack", "rolled back docs-bad to docs-v0: p95 latency 2300 ms > 1000 ms", "2026-03-01T09:30:00Z"),
        event("RolloutAborted", "AnalysisFailed: p95 Fail", "2026-03-02T09:29:00Z"),
        event("RolledBack", "rolled back x to y: someone else's", "2026-03-01T09:40:00Z", name="other"),
        event("RolledBack", "rolled back docs-v1 to docs-v0: a namesake", "2026-03-01T09:41:00Z", uid="old"),
        event("WeightChanged", "weight 10%", "2026-03-02T09:26:00Z"),
    ]
    card = build_snapshot([deployment(rollout)], [], events, NOW)["deployments"][0]
    assert [(r["revision"], r["outcome"], r["reason"]) for r in card["history"]] == [
        (3, "KnownGood", None),
        (2, "RolledBack", "rolled back docs-bad to docs-v0: p95 latency 2300 ms > 1000 ms"),
        (1, "KnownGood", None),
    ]
    assert [(r["kind"], r["message"]) for r in card["rollbacks"]] == [
        ("RolloutAborted", "AnalysisFailed: p95 Fail"),
        ("RolledBack", "rolled back docs-bad to docs-v0: p95 latency 2300 ms > 1000 ms"),
    ]
    assert [e["reason"] for e in card["events"]] == ["RolloutAborted", "WeightChanged", "RolledBack"]  # newest first


def test_a_rollback_reason_kept_in_status_outlives_its_event() -> None:
    obj = deployment({**IN_FLIGHT, "phase": "Aborted"})
    obj["status"]["history"][1]["message"] = "p95LatencyMs=2300>1000"
    card = build_snapshot([obj], [], [], NOW)["deployments"][0]  # the RolledBack Event has expired
    assert [(r["revision"], r["reason"]) for r in card["history"]] == [
        (3, None),
        (2, "p95LatencyMs=2300>1000"),
        (1, None),
    ]


def test_versions_of_the_deployment_s_knowledge_base_with_their_gate_and_role() -> None:
    versions = [
        version("docs-v1", "2026-03-01T10:00:00Z"),
        version("docs-v2", "2026-03-02T09:00:00Z"),
        version("docs-v3", "2026-03-02T09:10:00Z", passed=False),
        version("docs-bad", "2026-03-01T08:30:00Z"),
        version("faq-v1", "2026-03-02T09:00:00Z", kb="faq"),
        {**version("docs-v9", "2026-03-02T09:00:00Z"), "metadata": {"name": "docs-v9", "namespace": "staging"}},
    ]
    card = build_snapshot([deployment(IN_FLIGHT)], versions, [], NOW)["deployments"][0]
    rows = {row["name"]: row for row in card["versions"]}
    assert [row["name"] for row in card["versions"]] == ["docs-v3", "docs-v2", "docs-v1", "docs-bad"]
    assert rows["docs-v1"]["roles"] == ["serving", "lastKnownGood"]
    assert rows["docs-v2"]["roles"] == ["canary", "desired"]
    assert rows["docs-bad"]["roles"] == ["rolledBack"]
    gate = rows["docs-v3"]["gate"]
    assert gate["passed"] is False and gate["failed"] == ["recallAtK=0.7<0.9"] and gate["k"] == 3
    assert gate["metrics"]["recallAtK"] == 0.7 and gate["metrics"]["answerPassRate"] is None
    assert gate["thresholds"] == {"precisionAtK": 0.6, "recallAtK": 0.9, "mrr": 0.5, "ndcgAtK": 0.6}


def test_a_blue_green_deployment_has_no_rollout_and_no_buttons() -> None:
    obj = {
        "metadata": {"name": "plain", "namespace": "prod"},
        "spec": {"knowledgeBase": {"name": "docs", "version": "docs-v1"}, "slo": {"p95LatencyMs": 500}},
        "status": {"phase": "Healthy", "activeVersion": "docs-v1"},
    }
    card = build_snapshot([obj], [], [], NOW)["deployments"][0]
    assert card["rollout"] is None and card["strategy"] == "blueGreen" and not any(card["actions"].values())
    assert card["slo"]["limits"] == {
        "p95LatencyMs": 500,
        "errorRate": 0.01,
        "satisfaction": 0.65,
        "costPerQueryUsd": 0.01,
    }
    assert available_actions(None, {}) == dict.fromkeys(card["actions"], False)


def test_deployments_are_sorted_and_an_invalid_strategy_does_not_break_the_page() -> None:
    broken = deployment(IN_FLIGHT)
    broken["metadata"]["name"] = "a-broken"
    broken["spec"]["rollout"]["strategy"] = {"canary": {"steps": []}}
    cards = build_snapshot([deployment(IN_FLIGHT), broken], [], [], NOW)["deployments"]
    assert [c["name"] for c in cards] == ["a-broken", "docs-canary"]
    assert cards[0]["strategy"] == "invalid" and not any(cards[0]["actions"].values())
    assert cards[0]["rollout"]["steps"] == [] and cards[0]["rollout"]["canary"] == "docs-v2"


def test_chart_lines_are_one_per_version_without_unlabelled_or_empty_series() -> None:
    results = {
        "p95LatencyMs": [
            ({"kb_version": "docs-v2"}, [(100.0, 320.0), (115.0, 330.0)]),
            ({"kb_version": "docs-v1"}, [(100.0, 300.0)]),
            ({}, [(100.0, 1.0)]),
            ({"kb_version": "docs-v3"}, []),
        ]
    }
    assert chart_series(results) == {
        "p95LatencyMs": [
            {"version": "docs-v1", "points": [[100.0, 300.0]]},
            {"version": "docs-v2", "points": [[100.0, 320.0], [115.0, 330.0]]},
        ]
    }


@pytest.mark.parametrize(
    ("span", "step", "window"),
    [("5m", 2.5, 60), ("1h", 30, 120), ("24h", 720, 2880), ("1m", 1, 60)],
)
def test_chart_steps_and_rate_windows(span: str, step: float, window: float) -> None:
    from ragops_operator.api import parse_duration

    assert chart_step(parse_duration(span)).total_seconds() == step
    assert chart_rate_window(chart_step(parse_duration(span))).total_seconds() == window


def test_chart_queries_read_user_traffic_of_one_deployment_by_version() -> None:
    queries = chart_queries("prod", 'we"ird', timedelta(minutes=2))
    assert set(queries) == {"p95LatencyMs", "errorRate", "satisfaction", "costPerQueryUsd", "queriesPerSecond"}
    for promql in queries.values():
        assert 'namespace="prod",deployment="we\\"ird",role!~"shadow|probe"' in promql and "[120s]" in promql
        assert "by (kb_version)" in promql or "by (le, kb_version)" in promql
    assert 'status="error"' in queries["errorRate"] and " or 0 * " in queries["errorRate"]


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN, no web font, no remote script: the dashboard works without internet."""
    for asset in STATIC.iterdir():
        text = asset.read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, asset
        assert "@import" not in text and "//cdn" not in text, asset
