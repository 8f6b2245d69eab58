"""The source layout keeps `operator/` a source root, never a package shadowing the stdlib."""

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_operator_is_not_a_package() -> None:
    assert not (REPO_ROOT / "operator" / "__init__.py").exists()
    assert not (REPO_ROOT / "runtime" / "__init__.py").exists()


def test_import_operator_from_repo_root_is_the_standard_library() -> None:
    # A fresh interpreter started in the repository root puts '' (the root) first on sys.path:
    # exactly where a shadowing operator/ package would win.
    probe = "import operator, sys; print(operator.__file__); print(operator.itemgetter)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    path = Path(result.stdout.splitlines()[0]).resolve()
    assert path.parent == Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert "itemgetter" in result.stdout


def test_packages_import_from_the_installed_distribution() -> None:
    import ragops_operator
    import ragops_runtime

    assert Path(ragops_operator.__file__).parent == REPO_ROOT / "operator" / "ragops_operator"
    assert Path(ragops_runtime.__file__).parent == REPO_ROOT / "runtime" / "ragops_runtime"


def test_console_script_is_installed() -> None:
    ragops = Path(sys.executable).parent / "ragops"
    result = subprocess.run([str(ragops), "--help"], capture_output=True, text=True, check=True)
    assert "crds" in result.stdout
