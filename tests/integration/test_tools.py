"""Every tool `make tools` builds runs and reports the version its go.mod pins."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.controlplane import REPO_ROOT, TOOLS_BIN

pytestmark = pytest.mark.cluster


def pinned(module_dir: str, module: str) -> str:
    go_mod = (REPO_ROOT / "tools" / module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", go_mod, re.MULTILINE)
    assert match, f"{module} is not pinned in tools/{module_dir}/go.mod"
    return match.group(1)


@pytest.mark.parametrize(
    ("binary", "args", "module_dir", "module"),
    [
        ("kube-apiserver", ["--version"], "k8s", "k8s.io/kubernetes"),
        ("kube-controller-manager", ["--version"], "k8s", "k8s.io/kubernetes"),
        ("kube-scheduler", ["--version"], "k8s", "k8s.io/kubernetes"),
        ("kubectl", ["version", "--client"], "k8s", "k8s.io/kubernetes"),
        ("etcd", ["--version"], "etcd", "go.etcd.io/etcd/server/v3"),
        ("kwok", ["--version"], "kwok", "sigs.k8s.io/kwok"),
        ("helm", ["version", "--short"], "helm", "helm.sh/helm/v3"),
        ("kubeconform", ["-v"], "kubeconform", "github.com/yannh/kubeconform"),
    ],
)
def test_tool_reports_its_pinned_version(binary: str, args: list[str], module_dir: str, module: str) -> None:
    tool = Path(TOOLS_BIN) / binary
    result = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=30, check=True)
    version = pinned(module_dir, module)
    # etcd prints its version without the leading "v".
    assert version in result.stdout or version.removeprefix("v") in result.stdout, result.stdout
