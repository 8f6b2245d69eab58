"""The Helm chart on the real control plane: valid manifests, install, upgrade, uninstall, a working operator.

kubeconform validates every `ci/*-values.yaml` rendering offline, against schemas made from this
apiserver's own OpenAPI and from the CRDs (ours, and Prometheus Operator's from `make tools`).
The install runs in namespaces labelled `pod-security.kubernetes.io/enforce=restricted`, so the
apiserver itself refuses a pod spec that breaks the restricted level. kwok readies the chart's
operator pods without running them; the operator that proves the chart works is the chart's own
container, run as a local process under the chart's ServiceAccount (tests/support/pod_process.py),
so the RBAC the chart grants is all it has.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import urllib.request
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig

from ragops_operator.api import RagDeploymentSpec
from ragops_operator.api.knowledgebaseversion import StoreSpec
from ragops_operator.builders import RuntimeContext, build_runtime_children
from ragops_operator.kube import FIELD_MANAGER, Kube
from tests.integration.test_operator import apply, eventually, get
from tests.integration.test_operator_e2e import LENIENT, phase, prepare_sources, version
from tests.support.controlplane import REPO_ROOT, TOOLS_BIN, ControlPlane
from tests.support.kubeconform_schemas import SCHEMA_LOCATION, write_schemas
from tests.support.kubelet import ProcessKubelet
from tests.support.pod_process import PodProcess, service_account_kubeconfig

CHART = REPO_ROOT / "charts" / "ragops"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
EXTERNAL_CRDS = REPO_ROOT / ".tools" / "crds"
MONITORING_CRDS = (
    EXTERNAL_CRDS / "monitoring.coreos.com_servicemonitors.yaml",
    EXTERNAL_CRDS / "monitoring.coreos.com_prometheusrules.yaml",
)
OUR_CRDS = ("knowledgebaseversions.ragops.dev", "ragdeployments.ragops.dev")
RELEASE = "ragops"
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
KOPF_SCANNING = {
    ("list", "namespaces"),
    ("watch", "namespaces"),
    ("list", "customresourcedefinitions"),
    ("watch", "customresourcedefinitions"),
}
"""Cluster-wide reads Kopf tries for discovery and does without (a warning), so the chart never grants them."""


def helm(plane: ControlPlane, home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs the pinned helm against this control plane, with its caches in the test's directory."""
    env = {
        **plane.env(),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    result = subprocess.run([str(TOOLS_BIN / "helm"), *args], capture_output=True, text=True, env=env, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}\n{result.stdout}")
    return result


def kubernetes_version(plane: ControlPlane) -> str:
    return plane.version()["gitVersion"].lstrip("v")


def render(plane: ControlPlane, home: Path, *values: str) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "--namespace", "ragops-system"]
    args += ["--kube-version", kubernetes_version(plane), *values]
    return [doc for doc in yaml.safe_load_all(helm(plane, home, *args).stdout) if doc]


def crd_documents() -> list[dict[str, Any]]:
    files = [*sorted((REPO_ROOT / "crds").glob("*.yaml")), *MONITORING_CRDS]
    missing = [str(path) for path in files if not path.exists()]
    assert not missing, f"missing {missing}: run `make tools` (tools/external-crds.sh fetches them)"
    return [yaml.safe_load(path.read_text()) for path in files]


def kubeconform(manifest: Path, schemas: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(TOOLS_BIN / "kubeconform"),
            "-strict",
            "-summary",
            "-output=json",
            f"-kubernetes-version={version}",
            f"-schema-location={schemas}/{SCHEMA_LOCATION}",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[path.name for path in SCENARIOS])
def test_every_ci_scenario_renders_manifests_kubeconform_accepts(
    control_plane: ControlPlane, scenario: Path, tmp_path: Path
) -> None:
    plane = control_plane
    documents = render(plane, tmp_path, "-f", str(scenario))
    openapi = json.loads(plane.api_get("/openapi/v2"))
    schemas = tmp_path / "schemas"
    write_schemas(schemas, {(d["apiVersion"], d["kind"]) for d in documents}, openapi, crd_documents())
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))

    result = kubeconform(manifest, schemas, kubernetes_version(plane))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)["summary"]
    # Every resource validated: none skipped for want of a schema.
    assert summary == {"valid": len(documents), "invalid": 0, "errors": 0, "skipped": 0}

    # The schemas are strict: a misspelt field is refused (kubeconform is not passing vacuously).
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    manifest.write_text(yaml.safe_dump(deployment))
    refused = kubeconform(manifest, schemas, kubernetes_version(plane))
    assert refused.returncode == 1 and "livenesProbe" in refused.stdout, refused.stdout


@pytest.fixture
def monitoring_crds(control_plane: ControlPlane) -> Iterator[None]:
    """Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, for this test only.

    Removed afterwards: the operator applies a ServiceMonitor wherever the kind exists, and the
    other tests expect a cluster without it.
    """
    files = [arg for path in MONITORING_CRDS for arg in ("-f", str(path))]
    control_plane.kubectl("apply", "--server-side", "--field-manager=ragops-tests", *files)
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *files)
    try:
        yield
    finally:
        control_plane.kubectl("delete", "--ignore-not-found", "--wait=false", *files, check=False)


@pytest.fixture
def helm_owned_crds(control_plane: ControlPlane, namespace: str) -> Iterator[None]:
    """Lets the release adopt the CRDs the session installed from crds/ (Helm's documented way).

    Afterwards the CRDs are as they were: Helm's ownership metadata and the keep policy removed.
    """
    for crd in OUR_CRDS:
        control_plane.kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")
        control_plane.kubectl(
            "annotate",
            "--overwrite",
            "crd",
            crd,
            f"meta.helm.sh/release-name={RELEASE}",
            f"meta.helm.sh/release-namespace={namespace}",
        )
    try:
        yield
    finally:
        for crd in OUR_CRDS:
            control_plane.kubectl("label", "crd", crd, "app.kubernetes.io/managed-by-", check=False)
            control_plane.kubectl(
                "annotate",
                "crd",
                crd,
                "meta.helm.sh/release-name-",
                "meta.helm.sh/release-namespace-",
                "helm.sh/resource-policy-",
                check=False,
            )


@pytest.fixture
def watched_namespace(control_plane: ControlPlane, namespace: str) -> Iterator[str]:
    name = f"{namespace[:50]}-apps"
    control_plane.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), response.read().decode()


def test_install_upgrade_and_uninstall_in_restricted_namespaces(
    workloads: ControlPlane,
    namespace: str,
    watched_namespace: str,
    monitoring_crds: None,
    helm_owned_crds: None,
    pg_dsn: str,
    tmp_path: Path,
) -> None:
    plane, apps = workloads, watched_namespace
    for name in (namespace, apps):
        plane.kubectl("label", "namespace", name, RESTRICTED)
    # The namespaces really enforce the restricted level: a pod with default settings is refused.
    plain = plane.kubectl(
        "run", "plain", "-n", namespace, "--image=registry.invalid/x", "--dry-run=server", check=False
    )
    assert plain.returncode != 0 and 'violates PodSecurity "restricted:latest"' in plain.stderr, plain.stderr

    values = [
        "--set=watch.mode=namespaces",
        f"--set=watch.namespaces={{{apps}}}",
        "--set=metrics.serviceMonitor.enabled=true",
        "--set=prometheusRule.enabled=true",
    ]
    install = helm(plane, tmp_path, "install", RELEASE, str(CHART), "-n", namespace, "--wait", "--timeout=90s", *values)
    assert "STATUS: deployed" in install.stdout and f"It watches the namespaces: {apps}." in install.stdout

    operator = get(plane, namespace, "deployment", RELEASE)
    assert operator is not None and operator["status"]["readyReplicas"] == 2  # admitted under `restricted`
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={apps}" in args
    assert get(plane, apps, "role", RELEASE) is not None and get(plane, apps, "rolebinding", RELEASE) is not None
    assert plane.kubectl("get", "clusterrole", RELEASE, check=False).returncode != 0  # namespaced mode only
    for kind in ("servicemonitor", "prometheusrule", "poddisruptionbudget", "service"):
        assert get(plane, namespace, kind, RELEASE if kind != "service" else f"{RELEASE}-metrics") is not None, kind
    for crd in OUR_CRDS:
        annotations = json.loads(plane.kubectl("get", "crd", crd, "-o", "json").stdout)["metadata"]["annotations"]
        assert annotations["helm.sh/resource-policy"] == "keep"

    # The chart's operator container, under the chart's ServiceAccount, reconciles an example.
    pods = json.loads(
        plane.kubectl(
            "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "json"
        ).stdout
    )["items"]
    assert len(pods) == 2
    prepare_sources(plane, apps, pg_dsn, tmp_path / "sources")
    with (
        ProcessKubelet(plane, [apps]),
        PodProcess(plane, pods[0], "operator", tmp_path / "operator") as process,
    ):
        try:
            health = f"http://127.0.0.1:{process.health_port}"
            eventually("the operator's /healthz", lambda: _answers(f"{health}/healthz"), timeout=30)
            apply(plane, apps, version("docs-v1", "corpus-a", LENIENT))
            eventually("docs-v1 built and gated", lambda: phase(plane, apps, "kbv", "docs-v1") == "Ready", timeout=90)
            deployment: dict[str, Any] = {
                "apiVersion": "ragops.dev/v1alpha1",
                "kind": "RagDeployment",
                "metadata": {"name": "docs"},
                "spec": {"knowledgeBase": {"name": "docs", "version": "docs-v1"}, "rollout": {"bakeTime": "2s"}},
            }
            apply(plane, apps, deployment)
            eventually(
                "docs-v1 served",
                lambda: (
                    ((get(plane, apps, "ragd", "docs") or {}).get("status") or {}).get("activeVersion") == "docs-v1"
                ),
                timeout=60,
            )
            runtime = eventually(
                "the runtime's pods Ready under `restricted`",
                lambda: (
                    (d := get(plane, apps, "deployment", "docs-runtime")) and d["status"].get("readyReplicas") and d
                ),
            )
            assert runtime["metadata"]["ownerReferences"][0]["name"] == "docs"
            assert get(plane, apps, "servicemonitor", "docs-runtime") is not None  # the kind exists now
            status, metrics = http_get(f"{health}/metrics")
            assert status == 200 and "ragops_operator_leader 1.0" in metrics
            assert f'ragops_operator_promotions_total{{namespace="{apps}",ragdeployment="docs"}}' in metrics
        except BaseException:
            print(process.log()[-8000:])
            raise
        assert process.running(), process.log()[-4000:]
    # Every call the operator makes is allowed. Kopf's cluster scanning (list namespaces, watch
    # CRDs) is refused by design and Kopf falls back to the namespaces it was given.
    refused = set(re.findall(r'cannot (\w+) resource \\?"([\w./]+)\\?"', process.log()))
    assert refused <= KOPF_SCANNING, f"calls the chart's RBAC does not allow: {sorted(refused - KOPF_SCANNING)}"
    # ...and under the chart's admission policy, which was in force, none of its writes was denied.
    assert (
        plane.kubectl("get", "validatingadmissionpolicybinding", f"{RELEASE}-confine-writes", check=False).returncode
        == 0
    )
    assert "denied request" not in process.log()

    # An upgrade with changed values rolls the operator.
    upgrade_values = [*values, "--set=replicaCount=3", "--set-json=prometheusRule.thresholds.p95LatencySeconds=0.7"]
    helm(plane, tmp_path, "upgrade", RELEASE, str(CHART), "-n", namespace, "--wait", "--timeout=90s", *upgrade_values)
    operator = get(plane, namespace, "deployment", RELEASE)
    assert operator is not None and operator["status"]["readyReplicas"] == 3
    rule = get(plane, namespace, "prometheusrule", RELEASE)
    assert rule is not None
    exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    assert any(expr.rstrip().endswith("> 0.7") for expr in exprs), exprs
    history = json.loads(helm(plane, tmp_path, "history", RELEASE, "-n", namespace, "-o", "json").stdout)
    assert [entry["revision"] for entry in history] == [1, 2]

    # Uninstalling removes the operator and its permissions, and keeps the CRDs and every resource.
    uninstall = helm(plane, tmp_path, "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout=60s")
    assert "kept due to the resource policy" in uninstall.stdout + uninstall.stderr
    for kind, name, where in (
        ("deployment", RELEASE, namespace),
        ("serviceaccount", RELEASE, namespace),
        ("role", RELEASE, apps),
        ("role", f"{RELEASE}-leader-election", namespace),
        ("prometheusrule", RELEASE, namespace),
    ):
        assert get(plane, where, kind, name) is None, f"{kind} {name} left behind"
    for crd in OUR_CRDS:
        assert plane.kubectl("get", "crd", crd, check=False).returncode == 0, f"{crd} was deleted"
    assert get(plane, apps, "ragd", "docs") is not None and get(plane, apps, "kbv", "docs-v1") is not None


def _answers(url: str) -> bool:
    try:
        return http_get(url)[0] == 200
    except OSError:
        return False


CLUSTER_RELEASE = "ragops-cluster"


async def _refusal(call: Awaitable[Any]) -> str:
    """The apiserver's message when `call` is refused (403), or "" when it succeeds."""
    try:
        await call
    except ApiError as error:
        assert error.status.code == 403, error.status
        return str(error.status.message)
    return ""


async def test_cluster_mode_confines_the_operator_to_its_own_objects_and_named_secrets(
    control_plane: ControlPlane, namespace: str, watched_namespace: str, tmp_path: Path
) -> None:
    """Cluster mode grants by kind in every namespace; the chart narrows it to what the operator uses.

    The operator's own client, with the chart's ServiceAccount token, reads only the Secrets named
    in rbac.storeSecretNames, and the chart's admission policy lets it write only the objects it
    labels as its own, in no protected namespace. (The reconciling operator under the chart's
    RBAC and policy is test_install_upgrade_and_uninstall_in_restricted_namespaces.)
    """
    plane, apps = control_plane, watched_namespace
    preview = helm(
        plane,
        tmp_path,
        "install",
        CLUSTER_RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--dry-run",
        "--set=crds.install=false",
    )
    assert "The operator may read any Secret in the cluster by name" in preview.stdout
    values = ["--set=crds.install=false", "--set=rbac.storeSecretNames={pg}"]
    install = helm(plane, tmp_path, "install", CLUSTER_RELEASE, str(CHART), "-n", namespace, *values)
    assert "may read any Secret" not in install.stdout
    assert f"confined by the ValidatingAdmissionPolicy {CLUSTER_RELEASE}-confine-writes" in install.stdout
    try:
        plane.kubectl("create", "secret", "generic", "pg", "-n", apps, "--from-literal=dsn=postgresql://x")
        plane.kubectl("create", "secret", "generic", "other", "-n", apps, "--from-literal=dsn=postgresql://y")
        plane.kubectl("create", "configmap", "admins", "-n", apps, "--from-literal=a=b")
        kubeconfig = service_account_kubeconfig(plane, namespace, CLUSTER_RELEASE, tmp_path / "operator.kubeconfig")
        kube = Kube(AsyncClient(config=KubeConfig.from_file(kubeconfig), field_manager=FIELD_MANAGER))
        try:
            assert await kube.secret_value(apps, "pg", "dsn") == "postgresql://x"
            assert await kube.secret_value(apps, "other", "dsn") is None  # refused: waits like a missing Secret

            # The operator's own children, exactly as it builds them for a real RagDeployment (their
            # owner: garbage collection would take children of a missing one), pass the policy...
            document = yaml.safe_load((REPO_ROOT / "examples" / "ragdeployment.yaml").read_text())
            owner = json.loads(
                plane.kubectl("create", "-n", apps, "-o", "json", "-f", "-", input=json.dumps(document)).stdout
            )
            spec = RagDeploymentSpec.model_validate(owner["spec"])
            store = StoreSpec.model_validate({"dsnSecretRef": {"name": "pg", "key": "dsn"}})
            uid = owner["metadata"]["uid"]
            runtime = RuntimeContext("docs", apps, uid, spec, store, "ghcr.io/ragops/ragops:0.1.0")
            children = [c for c in build_runtime_children(runtime) if c["kind"] != "ServiceMonitor"]
            config_map = next(c for c in children if c["kind"] == "ConfigMap")
            unlabelled = {**config_map, "metadata": {**config_map["metadata"], "name": "unlabelled", "labels": {}}}

            # ...once the policy is in force (admission reads policies from a cache: give it a moment).
            async def policy_in_force() -> str:
                deadline = asyncio.get_running_loop().time() + 30
                while asyncio.get_running_loop().time() < deadline:
                    if refusal := await _refusal(kube.apply(unlabelled)):
                        return refusal
                    await kube.delete("v1", "ConfigMap", apps, "unlabelled")  # allowed: not yet in force
                    await asyncio.sleep(0.5)
                pytest.fail("the admission policy never refused an unlabelled ConfigMap")

            assert (
                "only writes objects labelled app.kubernetes.io/managed-by=ragops-operator" in await policy_in_force()
            )
            for child in children:
                await kube.apply(child)
            assert get(plane, apps, "deployment", "docs-runtime") is not None

            # ...while what is not its own is refused: taking over, changing or deleting another's
            # object, and anything in a protected namespace.
            takeover = {**config_map, "metadata": {**config_map["metadata"], "name": "admins"}}
            assert "only changes or deletes objects it created" in await _refusal(kube.apply(takeover))
            assert "only changes or deletes objects it created" in await _refusal(
                kube.delete("v1", "ConfigMap", apps, "admins")
            )
            system = {**config_map, "metadata": {**config_map["metadata"], "namespace": "kube-system"}}
            assert "may not write in namespace kube-system" in await _refusal(kube.apply(system))
            assert await _refusal(kube.delete("v1", "ConfigMap", apps, config_map["metadata"]["name"])) == ""
        finally:
            await kube.close()
        assert get(plane, apps, "configmap", "admins") is not None
    finally:
        helm(plane, tmp_path, "uninstall", CLUSTER_RELEASE, "-n", namespace, "--wait", "--timeout=60s")
    for kind in ("clusterrole", "validatingadmissionpolicy", "validatingadmissionpolicybinding"):
        name = CLUSTER_RELEASE if kind == "clusterrole" else f"{CLUSTER_RELEASE}-confine-writes"
        assert plane.kubectl("get", kind, name, check=False).returncode != 0, f"{kind} left behind"
