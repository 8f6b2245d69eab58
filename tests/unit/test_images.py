"""Policy checks of the container images' Dockerfiles, read without building them.

These tests read the Dockerfiles with dockerfile-parse and hold them to the image policy: pinned
default bases, a frozen lock, uv as pinned in the Makefile, a final stage that holds only the
virtual environment, runs as a numeric non-root user and carries the OCI labels, a HEALTHCHECK
without curl, COPY sources that exist and survive .dockerignore, and an entrypoint that is a real
`ragops` command (asked of the real CLI). That the images build, start and work is the image tier's
(tests/integration/test_images.py, with podman); the public bases' digests stay unchecked (not
resolvable offline).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from click.testing import CliRunner
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]  # no type information

from ragops_operator.cli import main as ragops_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"


@dataclass(frozen=True)
class Image:
    dockerfile: str
    reference: str
    command: tuple[str, ...]
    """The argv the image runs by default: ENTRYPOINT followed by CMD."""
    health_port: int


IMAGES = (
    Image("operator.Dockerfile", "ghcr.io/ragops/ragops-operator:0.1.0", ("ragops", "operator", "run"), 8081),
    Image("runtime.Dockerfile", "ghcr.io/ragops/ragops:0.1.0", ("ragops", "serve"), 8080),
)
IMAGE_IDS = [image.dockerfile for image in IMAGES]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]


def global_args(dockerfile: str) -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults: what a FROM line may name."""
    found: dict[str, str] = {}
    for item in DockerfileParser(str(DOCKER_DIR / dockerfile)).structure:
        if item["instruction"] == "FROM":
            break
        if item["instruction"] == "ARG":
            name, _, default = item["value"].partition("=")
            found[name.strip()] = default.strip()
    return found


def stages(dockerfile: str) -> list[Stage]:
    """The build stages, each FROM resolved with the default of the global ARG it names."""
    parser = DockerfileParser(str(DOCKER_DIR / dockerfile))
    defaults = global_args(dockerfile)
    result: list[Stage] = []
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            base, _, name = value.partition(" AS ")
            if not name:
                base, _, name = value.partition(" as ")
            base = re.sub(r"\$\{(\w+)\}", lambda match: defaults[match.group(1)], base.strip())
            result.append(Stage(base=base, name=name.strip() or None))
        elif instruction == "ARG" and not result:
            continue  # a global ARG, read by global_args
        elif instruction != "COMMENT":
            assert result, f"{dockerfile}: {instruction} before the first FROM"
            result[-1].instructions.append((instruction, value))
    return result


def exec_form(value: str) -> list[str]:
    """The argv of an exec-form (JSON array) instruction; the shell form is refused by the policy."""
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed), value
    return parsed


def healthcheck_command(stage: Stage) -> list[str]:
    (value,) = stage.values("HEALTHCHECK")
    options, marker, command = value.partition("CMD")
    assert marker, f"HEALTHCHECK without CMD: {value}"
    assert all(option.startswith("--") for option in options.split()), options
    return exec_form(command.strip())


@cache
def makefile_uv_version() -> str:
    found = re.search(r"^UV_VERSION\s*:=\s*(\S+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found is not None, "the Makefile no longer pins uv"
    return found.group(1)


# ---- .dockerignore, with Docker's rules --------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: Go's filepath.Match (`*`, `?`, `[...]`) plus `**` for any depth."""
    out = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            index += 2
            if pattern.startswith("/", index):
                index += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", index)
            out += "[" + pattern[index + 1 : end].replace("!", "^", 1) + "]"
            index = end
        else:
            out += re.escape(char)
        index += 1
    return re.compile(out + r"\Z")


@cache
def dockerignore_rules() -> tuple[tuple[bool, re.Pattern[str]], ...]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return tuple(rules)


def is_ignored(relative: str) -> bool:
    """Whether Docker leaves `relative` out of the build context: the last matching rule decides,
    and a rule matches a path when it matches the path or any directory above it."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: length + 1]) for length in range(len(parts))]
    ignored = False
    for negated, regex in dockerignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_the_dockerignore_matcher_follows_docker_s_rules() -> None:
    # The rules this file's policy relies on, stated on paths whose fate is known.
    assert is_ignored(".venv/bin/python")
    assert is_ignored("tests/unit/test_images.py")
    assert is_ignored(".git/HEAD")
    assert not is_ignored("operator/ragops_operator/cli.py")
    assert is_ignored("operator/ragops_operator/__pycache__/cli.cpython-311.pyc")
    assert not is_ignored("uv.lock")


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in listed.stdout.splitlines() if (REPO_ROOT / line).is_file()]


def test_the_build_context_is_only_what_the_images_need() -> None:
    sent = sorted(path for path in tracked_files() if not is_ignored(path))
    assert sent, "the build context would be empty"
    allowed = ("pyproject.toml", "uv.lock", "README.md", "operator/ragops_operator/", "runtime/ragops_runtime/")
    assert [path for path in sent if not path.startswith(allowed)] == []
    assert "operator/ragops_operator/cli.py" in sent and "runtime/ragops_runtime/sample/__init__.py" in sent


# ---- the Dockerfiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_base_images_are_pinned_and_the_same_python(image: Image) -> None:
    all_stages = stages(image.dockerfile)
    assert len(all_stages) >= 2, "a multi-stage build: the final stage must not hold the build tools"
    stage_names = {stage.name for stage in all_stages if stage.name}
    for stage in all_stages:
        if stage.base in stage_names:
            continue
        repository, _, tag = stage.base.partition("@")[0].rpartition(":")
        assert repository and tag and tag != "latest", f"unpinned base image {stage.base}"
        # A full version (3.11.14), not a moving minor tag, and slim.
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim(-\w+)?", tag), stage.base
    # The venv's interpreter is a symlink to the base's python: by default both stages are the same
    # image, and both bases are build arguments (`make images` passes two Debian bases of one python).
    assert len({stage.base for stage in all_stages}) == 1
    assert set(global_args(image.dockerfile)) >= {"BASE", "BUILD_BASE"}
    raw_froms = [
        line.split()[1] for line in (DOCKER_DIR / image.dockerfile).read_text().splitlines() if line.startswith("FROM")
    ]
    assert raw_froms == ["${BUILD_BASE}", "${BASE}"]
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minor = re.search(r":(\d+\.\d+)", all_stages[-1].base)
    assert minor is not None and requires == ">=3.11" and tuple(map(int, minor.group(1).split("."))) >= (3, 11)


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_the_builder_installs_exactly_the_lock_with_the_pinned_uv(image: Image) -> None:
    builder = stages(image.dockerfile)[0]
    runs = builder.values("RUN")
    # pip installs uv, the Makefile's version, and nothing else: the lock decides every other package.
    pip_installs = [shlex.split(run) for run in runs if "pip install" in run]
    assert [argv[-1] for argv in pip_installs] == [f"uv=={makefile_uv_version()}"]
    syncs = [shlex.split(run) for run in runs if run.startswith("uv ")]
    assert syncs, "the builder never runs uv"
    for argv in syncs:
        assert argv[:2] == ["uv", "sync"], argv
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(argv), argv
    # The last sync installs the project itself, as a wheel.
    assert "--no-install-project" not in syncs[-1]


def test_both_images_share_one_builder() -> None:
    builders = [stages(image.dockerfile)[0] for image in IMAGES]
    assert builders[0] == builders[1]


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_the_final_stage_holds_only_the_venv_and_no_build_tools(image: Image) -> None:
    *build_stages, final = stages(image.dockerfile)
    assert final.values("RUN") == [], "the final stage runs nothing: no apt, no pip, no compilers"
    copies = final.values("COPY") + final.values("ADD")
    assert copies, "the final stage copies the venv"
    builder_names = {stage.name for stage in build_stages}
    for copy in copies:
        argv = shlex.split(copy)
        assert argv[0].startswith("--from=") and argv[0].removeprefix("--from=") in builder_names, copy
        assert argv[1:] == ["/opt/ragops", "/opt/ragops"], copy
    environment = " ".join(final.values("ENV"))
    assert "PATH=/opt/ragops/bin:$PATH" in environment


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_the_final_stage_runs_as_numeric_non_root(image: Image) -> None:
    users = stages(image.dockerfile)[-1].values("USER")
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and group.isdigit(), "numeric, so runAsNonRoot can verify it"
    # 65532 is the chart's runAsUser (distroless' "nonroot"): the same uid in and out of Kubernetes.
    assert (int(user), int(group)) == (65532, 65532)


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_the_final_stage_carries_the_oci_labels(image: Image) -> None:
    final = stages(image.dockerfile)[-1]
    labels: dict[str, str] = {}
    for value in final.values("LABEL"):
        for word in shlex.split(value):
            key, _, label = word.partition("=")
            labels[key] = label
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = (REPO_ROOT / "charts" / "ragops" / "Chart.yaml").read_text()
    assert labels["org.opencontainers.image.source"] in chart  # the chart's sources: one home
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    # ARG defaults of the final stage: the version is the project's; `make images` passes the git revision.
    args = dict(arg.partition("=")[::2] for arg in final.values("ARG"))
    assert args["VERSION"] == version and "REVISION" in args


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_the_healthcheck_asks_healthz_with_python_not_curl(image: Image) -> None:
    final = stages(image.dockerfile)[-1]
    argv = healthcheck_command(final)
    assert argv[:2] == ["python", "-c"], argv
    assert "/healthz" in argv[2] and str(image.health_port) in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")  # it is valid Python
    assert str(image.health_port) in final.values("EXPOSE")


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_every_copy_source_exists_and_reaches_the_build_context(image: Image) -> None:
    for stage in stages(image.dockerfile):
        for copy in stage.values("COPY") + stage.values("ADD"):
            argv = [part for part in shlex.split(copy) if not part.startswith("--")]
            if any(part.startswith("--from=") for part in shlex.split(copy)):
                continue  # from another stage, checked above
            *sources, _destination = argv
            for source in sources:
                path = REPO_ROOT / source
                assert path.exists(), f"{image.dockerfile}: COPY {source}: no such file in the repository"
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                relative = [str(p.relative_to(REPO_ROOT)) for p in files if "__pycache__" not in p.parts]
                assert relative, source
                assert [r for r in relative if is_ignored(r)] == [], f"excluded by .dockerignore: {source}"


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_the_entrypoint_is_a_real_ragops_command(image: Image) -> None:
    final = stages(image.dockerfile)[-1]
    (entrypoint,) = final.values("ENTRYPOINT")
    (command,) = final.values("CMD")
    argv = exec_form(entrypoint) + exec_form(command)
    assert tuple(argv) == image.command
    # `ragops` is the distribution's console script, and the subcommand exists in the real CLI.
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ragops"] == "ragops_operator.cli:main"
    assert set(scripts) == {"ragops", "kubectl-ragops"}  # the other is the kubectl plugin, not for images
    result = CliRunner().invoke(ragops_cli, [*argv[1:], "--help"], prog_name="ragops")
    assert result.exit_code == 0, result.output
    assert f"Usage: ragops {' '.join(argv[1:])}" in result.output


def test_the_installed_console_script_answers_like_the_image_would() -> None:
    # The same entry point the image's PATH resolves, as a process: what Docker would exec.
    ragops = Path(sys.executable).parent / "ragops"
    for image in IMAGES:
        done = subprocess.run([str(ragops), *image.command[1:], "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"Usage: ragops {' '.join(image.command[1:])}" in done.stdout


def test_the_operator_image_is_the_default_runtime_image_s_sibling() -> None:
    from ragops_operator.settings import DEFAULT_RUNTIME_IMAGE

    operator, runtime = (image.reference for image in IMAGES)
    assert runtime == DEFAULT_RUNTIME_IMAGE
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert operator.endswith(f":{version}") and runtime.endswith(f":{version}")
    for image in IMAGES:
        assert image.reference in (DOCKER_DIR / image.dockerfile).read_text()
