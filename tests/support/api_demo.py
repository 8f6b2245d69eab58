"""`make demo` until the runtime and operator land: the ragops API on a real local apiserver.

Starts the local control plane, installs the generated CRDs, applies the examples, and shows
what kubectl users see: printer columns, `kubectl explain`, and the apiserver refusing
invalid objects with the offending field named. Exits 0 only if every step behaved.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.support.controlplane import REPO_ROOT, ControlPlane, install_crds, running_control_plane

NAMESPACE = "ragops-demo"


def heading(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(plane: ControlPlane, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}")
    out = plane.kubectl(*args).stdout
    print(out.rstrip())
    return out


def refused(plane: ControlPlane, title: str, document: dict[str, object], field: str) -> bool:
    result = plane.kubectl("create", "-n", NAMESPACE, "-f", "-", input=json.dumps(document), check=False)
    ok = result.returncode != 0 and field in result.stderr
    print(f"- {title}\n  {'refused' if ok else 'NOT REFUSED AS EXPECTED'}: {result.stderr.strip()}")
    return ok


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ragops-demo-") as workdir:
        heading("Starting etcd + kube-apiserver (built by `make tools`)")
        with running_control_plane(Path(workdir)) as plane:
            print(f"kube-apiserver {plane.version()['gitVersion']} at {plane.server}")

            heading("Installing the CRDs generated from the pydantic models (crds/)")
            install_crds(plane)
            plane.kubectl("create", "namespace", NAMESPACE)

            heading("Applying examples/")
            show(plane, "apply", "-n", NAMESPACE, "-f", str(REPO_ROOT / "examples"))
            show(plane, "get", "-n", NAMESPACE, "kbv,ragd")

            heading("The apiserver filled in every default the models declare")
            spec = json.loads(plane.kubectl("get", "-n", NAMESPACE, "ragd", "docs-search", "-o", "json").stdout)
            print(yaml.safe_dump({"slo": spec["spec"]["slo"], "rollout": spec["spec"]["rollout"]}).rstrip())

            heading("kubectl explain reads the models' descriptions")
            show(plane, "explain", "ragdeployment.spec.rollout")

            heading("Invalid objects are refused, naming the field")
            base = yaml.safe_load((REPO_ROOT / "examples" / "ragdeployment.yaml").read_text())
            base["metadata"]["name"] = "bad"
            checks = [
                refused(
                    plane,
                    "rerankTopK larger than topK (a CEL rule)",
                    _with(base, ["spec", "retrieval", "rerankTopK"], 50),
                    "spec.retrieval.rerankTopK",
                ),
                refused(
                    plane,
                    "an error rate above 1",
                    _with(base, ["spec", "slo", "maxErrorRate"], 1.5),
                    "spec.slo.maxErrorRate",
                ),
                refused(
                    plane,
                    "a misspelt field",
                    _with(base, ["spec", "slo", "p95LatencyMS"], 800),
                    "spec.slo.p95LatencyMS",
                ),
            ]
            changed = yaml.safe_load((REPO_ROOT / "examples" / "knowledgebaseversion.yaml").read_text())
            changed["spec"]["chunking"]["size"] = 256
            result = plane.kubectl(
                "apply",
                "--server-side",
                "--force-conflicts",
                "-n",
                NAMESPACE,
                "-f",
                "-",
                input=json.dumps(changed),
                check=False,
            )
            immutable = result.returncode != 0 and "spec is immutable" in result.stderr
            print(
                f"- changing a KnowledgeBaseVersion's spec\n  {'refused' if immutable else 'NOT REFUSED'}: "
                f"{result.stderr.strip()}"
            )
            checks.append(immutable)

    heading("Summary")
    print(f"{sum(checks)}/{len(checks)} invalid changes refused; {time.monotonic() - started:.1f}s in all.")
    print("Next: the runtime, knowledge-base builds and the operator turn these objects into a served endpoint.")
    return 0 if all(checks) else 1


def _with(document: dict[str, object], path: list[str], value: object) -> dict[str, object]:
    out: dict[str, object] = json.loads(json.dumps(document))
    node = out
    for key in path[:-1]:
        child = node[key]
        assert isinstance(child, dict)
        node = child
    node[path[-1]] = value
    return out


if __name__ == "__main__":
    sys.exit(main())
