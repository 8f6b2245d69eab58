"""The README's commands and manifests, as printed, against real servers.

Manifests go to the real apiserver (server-side dry run where another test covers their effect:
what matters here is that the schema accepts them as written); `ragops` commands run against an
embedded PostgreSQL in a data directory of the test's; `curl` against a real runtime (`ragops
serve` itself, as printed, and the curl lines again: tests/integration/test_serve.py).
Substitutions are only what a test must change to run on a shared machine: ports, URLs of
services the README names by their cluster address, namespaces. tests/support/readme.py says how
a block becomes commands; tests/unit/test_readme_blocks.py that every block is run somewhere.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result

from ragops_operator.cli import main as ragops
from ragops_runtime.app import create_app
from ragops_runtime.store.embedded import start_embedded
from tests.integration.test_chart import helm
from tests.integration.test_runtime import settings_for
from tests.integration.test_serve import free_port
from tests.support.cluster_story import wait_for
from tests.support.controlplane import ControlPlane
from tests.support.prometheus import running_prometheus
from tests.support.readme import curl, readme_commands, readme_snippet, readme_transcript_output, shell, user_env
from tests.support.runtime_server import serving

REPO_ROOT = Path(__file__).resolve().parents[2]
RAGOPS = str(Path(sys.executable).parent / "ragops")


def apply(plane: ControlPlane, namespace: str, documents: list[dict[str, Any]], *extra: str) -> str:
    stream = "\n---\n".join(json.dumps(document) for document in documents)
    return plane.kubectl("apply", "-n", namespace, "-f", "-", *extra, input=stream).stdout


def test_the_readme_manifests_are_accepted_by_the_apiserver(control_plane: ControlPlane, namespace: str) -> None:
    api = [document for document in yaml.safe_load_all(readme_snippet("api")) if document]
    assert [document["kind"] for document in api] == ["KnowledgeBaseVersion", "RagDeployment"]
    (tracing,) = [document for document in yaml.safe_load_all(readme_snippet("tracing")) if document]
    # The canary block is the spec part of examples/ragdeployment-canary.yaml (applied whole elsewhere).
    example = yaml.safe_load((REPO_ROOT / "examples" / "ragdeployment-canary.yaml").read_text())
    canary = {
        **{key: example[key] for key in ("apiVersion", "kind", "metadata")},
        **yaml.safe_load(readme_snippet("canary-spec")),
    }
    for document in (*api, tracing, canary):
        out = apply(control_plane, namespace, [document], "--dry-run=server")
        assert "(server dry run)" in out, out
    # The quick start's own apply lines (built, gated and served for real in test_gitops.py), but the
    # CloudNativePG cluster's: this control plane has no CloudNativePG.
    applies = [c for c in readme_commands("quickstart") if c.startswith("kubectl apply ") and "postgres-cnpg" not in c]
    assert len(applies) == 2, applies
    for command in applies:
        words = shlex.split(command.replace("ragops-quickstart", namespace))
        out = control_plane.kubectl(*words[1:], "--dry-run=server").stdout
        assert "(server dry run)" in out, out


def test_the_refused_apply_prints_what_the_readme_shows(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    (command,) = readme_commands("invalid-apply")
    assert command == "kubectl apply -f bad.yaml"
    # bad.yaml: the README's own RagDeployment, keeping more passages for the reranker than it retrieves.
    (deployment,) = [d for d in yaml.safe_load_all(readme_snippet("api")) if d and d["kind"] == "RagDeployment"]
    deployment["spec"]["retrieval"] = {"topK": 5, "rerankTopK": 10}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(deployment))
    env = user_env(KUBECONFIG=str(kubeconfig_in(control_plane, namespace, tmp_path)))
    result = subprocess.run(["bash", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == readme_transcript_output("invalid-apply").strip()


def kubeconfig_in(plane: ControlPlane, namespace: str, directory: Path) -> Path:
    """The test cluster's kubeconfig with `namespace` as its context's, as a user's current context has one."""
    config = yaml.safe_load(plane.kubeconfig.read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = namespace
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_read_replica_secret_command(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    (command,) = readme_commands("read-replica-secret")
    # What CloudNativePG writes for a cluster named pg: pg-app, whose uri names the read-write Service.
    uri = "postgresql://app:s3cret@pg-rw.team.svc:5432/app"
    control_plane.kubectl("create", "secret", "generic", "pg-app", "-n", namespace, f"--from-literal=uri={uri}")
    shell(command, user_env(KUBECONFIG=str(kubeconfig_in(control_plane, namespace, tmp_path))))
    made = control_plane.kubectl("get", "secret", "pg-ro", "-n", namespace, "-o", "jsonpath={.data.dsn}").stdout
    assert base64.b64decode(made).decode() == "postgresql://app:s3cret@pg-ro.team.svc:5432/app"


# ---- the embedded store: serve, curl, kb and cost --------------------------------------------------


def run_ragops(command: str, **env: str) -> Result:
    """A `ragops ...` README command, parsed as the shell would and run by the CLI in this process.

    In process: each `ragops` process imports for seconds here (bytecode is not cached on these
    machines), and this runs the same click command with the same arguments and exit code.
    """
    words = shlex.split(command)
    assert words[0] == "ragops", command
    return CliRunner().invoke(ragops, words[1:], env=env, catch_exceptions=False)


FAQ = "# FAQ\n\nThe handbook answers questions about deploys, on-call and incidents.\n"
DOCS = {
    "deploys.md": "# Deploys\n\nDeploys go out on weekdays before 16:00; never on a Friday afternoon.\n",
    "on-call.md": "# On-call\n\nThe on-call engineer answers pages within 15 minutes, day and night.\n",
    "incidents.md": "# Incidents\n\nEvery incident gets a written review within five working days.\n",
}


def golden(faq_url: str) -> dict[str, Any]:
    """Four documents that all answer every question: the README's commands need a gate that passes
    with the default thresholds (precision@5 counts distinct relevant documents over 5)."""
    relevant = [*DOCS, faq_url]
    return {
        "cases": [
            {"id": "friday", "query": "Can I deploy on a Friday afternoon?", "relevant": relevant},
            {"id": "pages", "query": "How fast are pages answered?", "relevant": relevant},
        ]
    }


def monthly_queries(output: str) -> int:
    found = re.search(r"queries per month: ([\d,]+)", output)
    assert found, output
    return int(found[1].replace(",", ""))


@contextmanager
def serving_files(directory: Path) -> Iterator[str]:
    """A plain HTTP file server on loopback, for the README's https://example.org/faq.md; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_kb_and_cost_commands_on_the_embedded_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ragops kb ...` and `ragops cost estimate ...` as printed, on the embedded store of a data directory."""
    build, evaluate, activate, rollback, listing, gc = readme_commands("kb-commands")
    what_if, from_log, from_prometheus, with_budget = readme_commands("cost-commands")
    data = tmp_path / "data"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    for name, text in DOCS.items():
        (tmp_path / "docs" / name).write_text(text)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "faq.md").write_text(FAQ)
    server = start_embedded(data)  # held for the test, so each command joins it instead of starting one
    try:
        with serving_files(tmp_path / "site") as site:
            faq_url = site + "/faq.md"
            (tmp_path / "golden.yaml").write_text(yaml.safe_dump(golden(faq_url)))

            def run(command: str, exit_code: int = 0) -> str:
                result = run_ragops(command.replace("https://example.org/faq.md", faq_url), RAGOPS_DATA_DIR=str(data))
                assert result.exit_code == exit_code, f"{command}\nexit {result.exit_code}: {result.output}"
                return result.output

            # v0 first, by the same commands, so that `--to v0` has something to go back to.
            for command in (build, evaluate, activate):
                run(command.replace("--version v1", "--version v0"))
            built = run(build)
            assert "built docs/v1: 4 documents" in built, built
            assert "gate: passed" in run(evaluate)
            run(activate)
            run(rollback)
            versions = json.loads(run(listing))
        assert (versions["active"], versions["previous"]) == ("v0", "v1"), versions
        run(gc)

        # Answers to measure: a runtime serving the docs knowledge base (in process: `ragops serve` as
        # printed runs in test_serve.py), scraped by Prometheus, on the data directory's store.
        settings = settings_for(server.get_uri(), knowledge_base="docs", namespace="docs-team", deployment="docs")
        with serving(create_app(settings, dsn=server.get_uri())) as url:
            port = int(url.rsplit(":", 1)[1])
            (query,) = [command for command in readme_commands("serve") if command.startswith("curl ")]
            with running_prometheus([f"127.0.0.1:{port}"], tmp_path) as prometheus:
                prometheus.wait_for('ragops_queries_total{mode="retrieval_only",status="ok"}', 0)
                for _ in range(3):
                    assert curl(query, port)["kbVersion"] == "v0"
                prometheus.wait_for('sum(ragops_queries_total{status="ok"})', 3)
                measured = run(from_prometheus.replace("http://prometheus:9090", prometheus.url))
        logged = run(from_log)
    finally:
        server.cleanup()
    # Three retrieval-only answers, measured: queries counted, nothing spent on a model.
    for output, source in ((measured, "prometheus"), (logged, "answer log")):
        assert f"Monthly cost ({source}," in output, output
        assert monthly_queries(output) > 0 and "cost per query: $0.000000" in output, output
    what_if_output = run_ragops(what_if).output
    assert monthly_queries(what_if_output) == 100_000, what_if_output
    # 70 % of the queries miss the cache: generation at $0.0135 and a rerank call at $0.002 each.
    assert "cost per query: $0.010850" in what_if_output, what_if_output
    (tmp_path / "prices.yaml").write_text(
        yaml.safe_dump(
            {
                "checked": "2026-12-01",
                "generation": {"claude-sonnet-4-6": {"input": 3.0, "output": 15.0}},
                # The file replaces the built-in table: the default static embedder (free, local) too.
                "embedding": {"text-embedding-3-small": 0.02, "wordllama-l2-supercat": 0.0},
                "rerank": {"rerank-v3.5": 2.0},
            }
        )
    )
    # 3,000 tokens in at $3/Mtok and 300 out at $15/Mtok: $0.0135 a query, over the $0.01 budget.
    over = run_ragops(with_budget)
    assert over.exit_code == 3, over.output
    report = json.loads(over.output)
    assert report["overBudget"] is True and report["costPerQueryUsd"] == pytest.approx(0.0135, rel=0.01), report
    # The other budget: the README's RagDeployment's slo.maxCostPerQueryUsd (0.01).
    (deployment,) = [d for d in yaml.safe_load_all(readme_snippet("api")) if d and d["kind"] == "RagDeployment"]
    (tmp_path / "ragd.yaml").write_text(yaml.safe_dump(deployment))
    alternative = run_ragops(with_budget.replace("--max-cost-per-query 0.01", "--ragdeployment ragd.yaml"))
    assert alternative.exit_code == 3 and json.loads(alternative.output)["overBudget"] is True, alternative.output


# ---- the operator, Argo CD and the chart on the control plane ------------------------------------------


def test_the_operator_and_argocd_commands_on_the_control_plane(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    (command,) = readme_commands("operator-run")
    port = free_port()
    words = shlex.split(command.replace("NS ...", namespace).replace("8081", str(port)))
    assert words[:3] == ["ragops", "operator", "run"] and "--standalone" in words, command
    env = user_env(KUBECONFIG=str(control_plane.kubeconfig), RAGOPS_OPERATOR_RUNTIME_IMAGE="registry.invalid/ragops:t")
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        operator = subprocess.Popen([RAGOPS, *words[1:]], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            assert operator.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the operator's /readyz", ready, timeout=60, interval=0.2)
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=30)
    assert operator.returncode == 0, log.read_text()

    # Argo CD's namespace as its install leaves it: an argocd-cm of its own, and the Application CRD.
    patch, application = readme_commands("argocd")
    crd = REPO_ROOT / ".tools" / "crds" / "application-crd.yaml"
    control_plane.kubectl("create", "namespace", "argocd")
    try:
        control_plane.kubectl("create", "configmap", "argocd-cm", "-n", "argocd", "--from-literal=url=https://argocd")
        control_plane.kubectl("apply", "--server-side", "-f", str(crd))
        wait_for(
            "Argo CD's Application CRD to be served",
            lambda: (
                control_plane.kubectl("get", "applications.argoproj.io", "-n", "argocd", check=False).returncode == 0
            ),
            timeout=30,
            interval=0.2,
        )
        env = user_env(KUBECONFIG=str(control_plane.kubeconfig))
        shell(patch, env)
        merged = json.loads(control_plane.kubectl("get", "configmap", "argocd-cm", "-n", "argocd", "-o", "json").stdout)
        assert merged["data"]["url"] == "https://argocd"  # merged into, not replaced
        assert {"resource.customizations.health.ragops.dev_KnowledgeBaseVersion"} <= set(merged["data"])
        assert "created" in shell(application, env)
    finally:
        control_plane.kubectl("delete", "namespace", "argocd", "--wait=false", check=False)
        control_plane.kubectl("delete", "-f", str(crd), "--wait=false", check=False)


CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "Namespace",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def test_the_helm_installs_pass_a_server_side_dry_run(control_plane: ControlPlane, tmp_path: Path) -> None:
    """`helm install` as printed, with `--dry-run=server`: the values schema takes the --set values, and
    the apiserver every object rendered, in a server-side dry run. `crds.install=false` because this
    control plane's CRDs were installed without Helm, which Helm refuses to adopt (the chart's CRD
    copies are checked against crds/ by `ragops crds --check`). Real installs: test_chart.py, and on a
    real node test_real_node.py."""
    commands = readme_commands("helm-install")
    assert len(commands) == 2
    namespaces = ["ragops-system", "team-a", "team-b"]
    for name in namespaces:
        control_plane.kubectl("create", "namespace", name)
    try:
        for command in commands:
            words = shlex.split(command)
            assert words[:2] == ["helm", "install"], command
            release = json.loads(
                helm(
                    control_plane, tmp_path, *words[1:], "--set=crds.install=false", "--dry-run=server", "-o", "json"
                ).stdout
            )
            documents = [d for d in yaml.safe_load_all(release["manifest"]) if d]
            assert {"Deployment", "ServiceAccount"} <= {d["kind"] for d in documents}
            for document in documents:  # Helm leaves the release's namespace out; kubectl needs it said
                if document["kind"] not in CLUSTER_SCOPED:
                    document["metadata"].setdefault("namespace", "ragops-system")
            out = control_plane.kubectl(
                *("apply", "--server-side", "--dry-run=server", "-f", "-"),
                input="\n---\n".join(json.dumps(d) for d in documents),
            ).stdout
            assert "(server dry run)" in out, out
            if "watch.mode=namespaces" in command:
                roles = {(d["kind"], d["metadata"].get("namespace")) for d in documents if d["kind"] == "RoleBinding"}
                assert {("RoleBinding", "team-a"), ("RoleBinding", "team-b")} <= roles, roles
    finally:
        for name in namespaces:
            control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
