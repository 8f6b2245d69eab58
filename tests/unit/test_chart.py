"""The Helm chart without a cluster: lint, rendering, RBAC shape, values documentation, alerts and dashboard.

`helm` and `promtool` are the real tools (`make tools`); nothing here needs an apiserver. The
chart on a live control plane (kubeconform, install, upgrade, uninstall, a reconciling operator)
is tests/integration/test_chart.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ragops_operator import crdgen
from ragops_operator.metrics import OperatorMetrics
from ragops_runtime.observability.metrics import DeploymentIdentity, RuntimeMetrics
from tests.support.controlplane import REPO_ROOT, TOOLS_BIN

CHART = REPO_ROOT / "charts" / "ragops"
HELM = str(TOOLS_BIN / "helm")
KUBE_VERSION = "1.35.4"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {result.stderr}")
    return result


def render(*values: str) -> list[dict[str, Any]]:
    out = helm("template", "ragops", str(CHART), "-n", "ops", "--kube-version", KUBE_VERSION, *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def test_helm_lint_passes_for_the_defaults_and_every_ci_scenario() -> None:
    scenarios = sorted((CHART / "ci").glob("*-values.yaml"))
    assert len(scenarios) >= 3
    for values in [None, *scenarios]:
        args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
        result = helm(*args, *(["-f", str(values)] if values else []), check=False)
        assert result.returncode == 0, f"{values}: {result.stdout}{result.stderr}"


def test_chart_crds_are_the_committed_crds_kept_on_uninstall_and_optional() -> None:
    assert crdgen.stale_chart_crds(CHART) == []
    committed = {yaml.safe_load(path.read_text())["metadata"]["name"] for path in (REPO_ROOT / "crds").glob("*.yaml")}
    rendered = of_kind(render(), "CustomResourceDefinition")
    assert {crd["metadata"]["name"] for crd in rendered} == committed
    for crd in rendered:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        source = REPO_ROOT / "crds" / f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml"
        assert crd["spec"] == yaml.safe_load(source.read_text())["spec"]
    assert of_kind(render("--set", "crds.install=false"), "CustomResourceDefinition") == []


def test_check_mode_reports_stale_and_stray_chart_crds(tmp_path: Path) -> None:
    crdgen.write_chart_crds(tmp_path)
    crd_dir = tmp_path / crdgen.CHART_CRD_DIR
    target = next(crd_dir.iterdir())
    target.write_text(target.read_text().replace("helm.sh/resource-policy: keep", "helm.sh/resource-policy: delete"))
    (crd_dir / "old.yaml").write_text("{}")
    problems = crdgen.stale_chart_crds(tmp_path)
    assert len(problems) == 2
    assert "old.yaml: not rendered from any model" in problems[0]
    assert "-    helm.sh/resource-policy: delete" in problems[1]


def test_the_operator_pod_meets_the_restricted_pod_security_level() -> None:
    (deployment,) = of_kind(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["image"] == "ghcr.io/ragops/ragops-operator:0.1.0"
    assert container["command"] == ["ragops"]
    assert container["args"] == ["operator", "run", "--health-address=0.0.0.0:8081"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["RAGOPS_OPERATOR_RUNTIME_IMAGE"] == "ghcr.io/ragops/ragops:0.1.0"
    assert env["RAGOPS_OPERATOR_LEASE_NAME"] == "ragops"
    assert env["RAGOPS_OPERATOR_LEASE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["RAGOPS_OPERATOR_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": 8081, "protocol": "TCP"}]


def _rules(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [rule for role in of_kind(documents, kind) for rule in role["rules"]]


def test_rbac_is_least_privilege_in_both_modes() -> None:
    cluster = render()
    namespaced = render("-f", str(CHART / "ci" / "namespaced-values.yaml"))
    for documents in (cluster, namespaced):
        for rule in _rules(documents, "Role") + _rules(documents, "ClusterRole"):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
            assert (
                "escalate" not in rule["verbs"] and "bind" not in rule["verbs"] and "impersonate" not in rule["verbs"]
            )
            if "secrets" in rule["resources"]:
                assert rule["verbs"] == ["get"], rule
            assert not {"namespaces", "nodes", "customresourcedefinitions"} & set(rule["resources"]), rule

    # Cluster mode: one ClusterRole, no --namespace flag.
    (cluster_role,) = of_kind(cluster, "ClusterRole")
    (binding,) = of_kind(cluster, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ragops", "namespace": "ops"}]
    assert not [
        a
        for a in of_kind(cluster, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        if a.startswith("--namespace")
    ]

    # Namespaced mode: the same rules as a Role in each watched namespace, nothing cluster-wide.
    assert of_kind(namespaced, "ClusterRole") == [] and of_kind(namespaced, "ClusterRoleBinding") == []
    watched = [r for r in of_kind(namespaced, "Role") if r["metadata"]["name"] == "ragops"]
    assert sorted(r["metadata"]["namespace"] for r in watched) == ["team-a", "team-b"]
    assert all(r["rules"] == cluster_role["rules"] for r in watched)
    args = of_kind(namespaced, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]

    # The leader Lease: by name, in the release namespace only.
    (election,) = [r for r in of_kind(cluster, "Role") if r["metadata"]["name"] == "ragops-leader-election"]
    assert election["metadata"]["namespace"] == "ops"
    assert election["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["ragops"],
            "verbs": ["get", "update"],
        },
    ]


def test_store_secret_names_narrow_secret_reads_to_those_names() -> None:
    for mode in ([], ["-f", str(CHART / "ci" / "namespaced-values.yaml")]):
        documents = render(*mode, "--set", "rbac.storeSecretNames={pg,pg-replica}")
        roles = of_kind(documents, "ClusterRole") + [
            r for r in of_kind(documents, "Role") if r["metadata"]["name"] == "ragops"
        ]
        assert roles
        for role in roles:
            (secrets,) = [rule for rule in role["rules"] if "secrets" in rule["resources"]]
            assert secrets == {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["pg", "pg-replica"],
                "verbs": ["get"],
            }


def _written(rules: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(API group, resource) of every kind the rules let the operator create, change or delete."""
    writes = {"create", "patch", "update", "delete"}
    return {
        (group, resource)
        for rule in rules
        if writes & set(rule["verbs"])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_writes_are_confined_to_the_operators_own_objects_in_both_modes() -> None:
    for mode in ([], ["-f", str(CHART / "ci" / "namespaced-values.yaml")]):
        documents = render(*mode)
        (policy,) = of_kind(documents, "ValidatingAdmissionPolicy")
        (binding,) = of_kind(documents, "ValidatingAdmissionPolicyBinding")
        assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert policy["spec"]["matchConditions"] == [
            {
                "name": "the-ragops-operator",
                "expression": "request.userInfo.username == 'system:serviceaccount:ops:ragops'",
            }
        ]
        # Every kind the operator may write, except its own resources, their status and its Events,
        # is under the policy: a kind added to the RBAC without it fails here.
        granted = _written(
            [r for r in of_kind(documents, "ClusterRole") + of_kind(documents, "Role") for r in r["rules"]]
        )
        children = granted - {(group, resource) for group, resource in granted if group == "ragops.dev"}
        children -= {("", "events"), ("coordination.k8s.io", "leases")}
        confined = {
            (group, resource)
            for rule in policy["spec"]["matchConstraints"]["resourceRules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
        }
        assert confined == children
        assert all(
            rule["operations"] == ["CREATE", "UPDATE", "DELETE"]
            for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        )
        expressions = [v["expression"] for v in policy["spec"]["validations"]]
        assert expressions[0] == "!(request.namespace in ['kube-system','kube-public','kube-node-lease'])"
        assert all("'app.kubernetes.io/managed-by'] == 'ragops-operator'" in e for e in expressions[1:])
    assert of_kind(render("--set", "rbac.confineWrites=false"), "ValidatingAdmissionPolicy") == []
    # Before Kubernetes 1.30 there is no admissionregistration.k8s.io/v1 policy: the chart still installs.
    old = helm("template", "ragops", str(CHART), "-n", "ops", "--kube-version", "1.29.9").stdout
    assert "ValidatingAdmissionPolicy" not in old and "kind: ClusterRole" in old


def test_namespaced_mode_without_namespaces_is_refused() -> None:
    result = helm(
        "template", "r", str(CHART), "--kube-version", KUBE_VERSION, "--set", "watch.mode=namespaces", check=False
    )
    assert result.returncode != 0 and "namespaces" in result.stderr


def _leaves(values: Any, path: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [leaf for key, value in values.items() for leaf in _leaves(value, f"{path}.{key}" if path else key)]
    return [path]


def _schema_node(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for key in path.split("."):
        node = (node or {}).get("properties", {}).get(key)
    return node


def test_every_value_is_described_in_the_schema_and_commented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    text = (CHART / "values.yaml").read_text()
    for leaf in _leaves(values):
        node = _schema_node(schema, leaf)
        # Maps of free-form labels (grafanaDashboard.labels.grafana_dashboard) are described by their parent.
        if node is None and _schema_node(schema, leaf.rsplit(".", 1)[0]) is not None:
            node = _schema_node(schema, leaf.rsplit(".", 1)[0])
        assert node is not None and node.get("description"), f"{leaf} is not in values.schema.json"
    # helm-docs' convention: a `# --` comment block right above each value; the keys inside a
    # documented map (resources.requests.cpu) are part of that value.
    documented_at: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    comment_block: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            comment_block.append(stripped)
            continue
        match = re.match(r"^(\s*)([A-Za-z_]+):(.*)$", line)
        if not match:
            comment_block = []
            continue
        indent = len(match.group(1))
        documented_at = [(level, flag) for level, flag in documented_at if level < indent]
        own = any(entry.startswith("# --") for entry in comment_block)
        inherited = any(flag for _, flag in documented_at)
        block_header = match.group(3).strip() == ""
        assert own or inherited or block_header, f"values.yaml line {number} has no `# --` comment: {line}"
        documented_at.append((indent, own))
        comment_block = []


def test_the_schema_refuses_what_cannot_work() -> None:
    for bad in ("watch.mode=everywhere", "replicaCount=0", "prometheusRule.thresholds.errorRatio=2", "typo=1"):
        result = helm("template", "r", str(CHART), "--kube-version", KUBE_VERSION, "--set", bad, check=False)
        assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr, bad


def _runtime_metric_names() -> set[str]:
    metrics = RuntimeMetrics(DeploymentIdentity("ns", "docs", "pod-0"))
    # Series of labelled collectors exist once a child does: create the ones without pre-made children.
    metrics.set_active_version("docs", "docs-v1")
    served = {"kb_version": "docs-v1", "role": "stable"}
    metrics.degraded("generation_timeout", **served)
    metrics.observe_query(mode="generated", status="ok", seconds=0.2, stages={"generate": 0.1}, **served)
    metrics.prepare_split("docs-v1", "docs-v2", probes=True)
    metrics.set_raters({("docs-v1", "stable"): 2})
    body, _ = metrics.render()
    names: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        names.update(sample.name for sample in family.samples)
    return names


def _operator_metric_names() -> set[str]:
    """The operator's own series (served on its health port), labelled children created."""
    metrics = OperatorMetrics()
    metrics.rollbacks.labels("ns", "docs").inc()
    metrics.promotions.labels("ns", "docs").inc()
    metrics.rollout_aborts.labels("ns", "docs").inc()
    names: set[str] = set()
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        names.update(sample.name for sample in family.samples)
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bragops_[a-z_]+", expr))


def _monitoring() -> list[dict[str, Any]]:
    return render("-f", str(CHART / "ci" / "monitoring-values.yaml"))


def test_alerts_and_dashboard_read_only_series_that_exist() -> None:
    known = _runtime_metric_names() | _operator_metric_names()
    (rule,) = of_kind(_monitoring(), "PrometheusRule")
    alert_exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    panel_exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for expr in alert_exprs + panel_exprs:
        assert _metric_names(expr) <= known, f"unknown series in {expr}: {_metric_names(expr) - known}"
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Latency p95 by stage",
        "Queries per second",
        "Error ratio",
        "Cache hit ratio",
        "Cost",
        "User satisfaction",
        "Active knowledge-base version",
        "Rollbacks and promotions",
    } <= titles


def _rule_file(tmp_path: Path, documents: list[dict[str, Any]]) -> Path:
    (rule,) = of_kind(documents, "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def test_prometheus_accepts_the_rules_and_the_dashboard_queries(tmp_path: Path) -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(_rule_file(tmp_path, _monitoring()))], capture_output=True, text=True
    )
    assert checked.returncode == 0 and "SUCCESS: 7 rules found" in checked.stdout, checked.stdout + checked.stderr

    # Grafana's variables replaced by values, each panel query is a recording rule promtool parses.
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    substitutions = {"$__rate_interval": "5m", "$__range": "6h", "$namespace": ".*", "$deployment": ".*"}
    rules = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId'].lower()}", "expr": expr})
    queries = tmp_path / "dashboard-rules.yaml"
    queries.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(queries)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("errors_per_minute", "fires"),
    [(2, True), (0, False)],
    ids=["2-percent-errors", "no-errors"],
)
def test_alerts_fire_at_the_seed_thresholds(tmp_path: Path, errors_per_minute: int, fires: bool) -> None:
    """promtool evaluates the default rules over synthetic series: 100 queries a minute at 600 ms
    p95 (under 1 s), satisfaction 0.6 (under 0.65), cost 0.014 USD a query (over 0.01 + 30 %)."""
    rules = _rule_file(tmp_path, render("--set", "prometheusRule.enabled=true"))
    labels = 'namespace="shop", deployment="docs", pod="docs-runtime-0"'
    series = [
        {
            "series": f'ragops_queries_total{{{labels}, mode="generated", status="ok"}}',
            "values": f"0+{100 - errors_per_minute}x120",
        },
        {
            "series": f'ragops_queries_total{{{labels}, mode="none", status="error"}}',
            "values": f"0+{errors_per_minute}x120",
        },
        {"series": f'ragops_query_duration_seconds_bucket{{{labels}, le="0.5"}}', "values": "0+90x120"},
        {"series": f'ragops_query_duration_seconds_bucket{{{labels}, le="1"}}', "values": "0+100x120"},
        {"series": f'ragops_query_duration_seconds_bucket{{{labels}, le="+Inf"}}', "values": "0+100x120"},
        {"series": f"ragops_feedback_score_sum{{{labels}}}", "values": "0+6x120"},
        {"series": f"ragops_feedback_score_count{{{labels}}}", "values": "0+10x120"},
        {"series": f'ragops_feedback_raters{{{labels}, kb_version="v1", role="stable"}}', "values": "4x120"},
        {"series": f'ragops_cost_usd_total{{{labels}, service="generation"}}', "values": "0+1.4x120"},
        # A rollout's golden probes fail slowly: counted as user traffic, they would fire every alert.
        {
            "series": f'ragops_queries_total{{{labels}, mode="none", status="error", role="probe"}}',
            "values": "0+100x120",
        },
        {"series": f'ragops_query_duration_seconds_bucket{{{labels}, le="+Inf", role="probe"}}', "values": "0+100x120"},
    ]
    who = "RagDeployment shop/docs"
    annotations = {
        "RagOpsErrorRateHigh": {
            "summary": f"{who}: more than 1% of queries fail",
            "description": "2% of queries failed over the last 5m.",
        },
        "RagOpsSatisfactionLow": {
            "summary": f"{who}: user satisfaction below 0.65",
            "description": "Feedback averaged 0.60 over the last 24h, from at least 3 distinct raters.",
        },
        "RagOpsCostOverBudget": {
            "summary": f"{who}: cost per query over budget",
            "description": "0.0140 USD per query over the last 1h, budget 0.01 USD plus 30%.",
        },
    }
    expected = ["RagOpsSatisfactionLow", "RagOpsCostOverBudget"] + (["RagOpsErrorRateHigh"] if fires else [])
    alert_labels = {"namespace": "shop", "deployment": "docs"}
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "90m",
                        "alertname": name,
                        "exp_alerts": [
                            {"exp_labels": {**alert_labels, "severity": severity}, "exp_annotations": annotations[name]}
                        ]
                        if name in expected
                        else [],
                    }
                    for name, severity in (
                        ("RagOpsErrorRateHigh", "critical"),
                        ("RagOpsLatencyP95High", "warning"),
                        ("RagOpsSatisfactionLow", "warning"),
                        ("RagOpsCostOverBudget", "warning"),
                    )
                ],
            }
        ],
    }
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("raters", "fires"),
    [
        (["1x120"], False),  # one client rating every answer badly
        ([], False),  # no gauge: the runtime cannot read its database, so nobody is counted
        (["1x30", "5x10", "1x80"], True),  # five distinct raters within the window, at some point
        (["1x120", "2x120"], False),  # two versions' raters are not added up: the same rater may rate both
    ],
    ids=["one-rater", "no-raters-series", "five-raters-earlier-in-the-window", "two-and-three-per-version"],
)
def test_the_satisfaction_alert_needs_distinct_raters(tmp_path: Path, raters: list[str], fires: bool) -> None:
    """promtool over low ratings (0.2 on average, 10 a minute): the alert fires only with at least
    prometheusRule.thresholds.minRaters (3) distinct raters counted by the runtime in its window."""
    rules = _rule_file(tmp_path, render("--set", "prometheusRule.enabled=true"))
    labels = 'namespace="shop", deployment="docs", pod="docs-runtime-0"'
    series = [
        {"series": f"ragops_feedback_score_sum{{{labels}}}", "values": "0+2x120"},
        {"series": f"ragops_feedback_score_count{{{labels}}}", "values": "0+10x120"},
        # A second replica reports the same deployment-wide count: max, never sum, gives 1.
        *(
            {"series": f'ragops_feedback_raters{{{labels}, kb_version="v{n}", role="stable"}}', "values": values}
            for n, values in enumerate(raters)
        ),
        *(
            {
                "series": f'ragops_feedback_raters{{namespace="shop", deployment="docs", pod="docs-runtime-1", '
                f'kb_version="v{n}", role="stable"}}',
                "values": values,
            }
            for n, values in enumerate(raters)
        ),
        # Probes are never rated by users; a probe series must not count as raters either.
        {"series": f'ragops_feedback_raters{{{labels}, kb_version="v9", role="probe"}}', "values": "9x120"},
    ]
    expected = (
        [
            {
                "exp_labels": {"namespace": "shop", "deployment": "docs", "severity": "warning"},
                "exp_annotations": {
                    "summary": "RagDeployment shop/docs: user satisfaction below 0.65",
                    "description": "Feedback averaged 0.20 over the last 24h, from at least 3 distinct raters.",
                },
            }
        ]
        if fires
        else []
    )
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "110m", "alertname": "RagOpsSatisfactionLow", "exp_alerts": expected}
                ],
            }
        ],
    }
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
