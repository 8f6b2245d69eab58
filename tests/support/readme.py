"""The README's fenced blocks and the marks that say what runs them, for the tests that do.

Each fenced block carries a mark on the line before it:

- `<!-- snippet: NAME -->`: a test executes or validates the block (SNIPPET_TESTS names which);
- `<!-- file: PATH -->`: the block is the file PATH verbatim (tests/unit/test_quickstart.py), which
  tests apply from the file;
- `<!-- not-run: REASON -->`: it cannot run here, and REASON says why.

tests/unit/test_readme_blocks.py fails on a block without one, so no command is documented unrun by accident.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.controlplane import TOOLS_BIN

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"

_MARK = re.compile(r"<!-- (?P<kind>snippet|file|not-run): (?P<value>.+?) -->")
_FENCE = re.compile(r"```(?P<language>[a-z]*)$")

# Which test runs each snippet; tests/unit/test_readme_blocks.py checks both directions.
COMMANDS = "tests/integration/test_readme_commands.py::"
BLOCKS = "tests/unit/test_readme_blocks.py::"
SNIPPET_TESTS = {
    "setup": BLOCKS + "test_every_make_target_the_readme_names_exists",
    "development": BLOCKS + "test_every_make_target_the_readme_names_exists",
    "bench": BLOCKS + "test_every_make_target_the_readme_names_exists",
    "layout": BLOCKS + "test_the_layout_names_paths_that_exist",
    "rollout-commands": BLOCKS + "test_the_kubectl_ragops_commands_parse",
    "dashboard-command": BLOCKS + "test_the_kubectl_ragops_commands_parse",
    "api": COMMANDS + "test_the_readme_manifests_are_accepted_by_the_apiserver",
    "canary-spec": COMMANDS + "test_the_readme_manifests_are_accepted_by_the_apiserver",
    "invalid-apply": COMMANDS + "test_the_refused_apply_prints_what_the_readme_shows",
    "read-replica-secret": COMMANDS + "test_the_read_replica_secret_command",
    "kb-commands": COMMANDS + "test_the_kb_and_cost_commands_on_the_embedded_store",
    "cost-commands": COMMANDS + "test_the_kb_and_cost_commands_on_the_embedded_store",
    "serve": "tests/integration/test_serve.py::test_serve_embedded_bootstraps_the_sample_and_answers",
    "quickstart": "tests/integration/test_serve.py::test_serve_embedded_bootstraps_the_sample_and_answers",
    "operator-run": COMMANDS + "test_the_operator_and_argocd_commands_on_the_control_plane",
    "argocd": COMMANDS + "test_the_operator_and_argocd_commands_on_the_control_plane",
    "helm-install": COMMANDS + "test_the_helm_installs_pass_a_server_side_dry_run",
    "openai-sdk": "tests/integration/test_openai_api.py::test_the_readme_snippets_run_against_a_real_runtime",
    "langchain": "tests/integration/test_openai_api.py::test_the_readme_snippets_run_against_a_real_runtime",
    "tracing": COMMANDS + "test_the_readme_manifests_are_accepted_by_the_apiserver",
}


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    body: str
    kind: str | None  # snippet, file, not-run, or None when unmarked
    value: str  # the snippet's name, the file's path or the reason

    def where(self) -> str:
        return f"README.md:{self.line} ({self.language or 'no language'})"


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README (or of `text`), with the mark on the line before it."""
    lines = (README.read_text() if text is None else text).split("\n")
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = next(j for j in range(index + 1, len(lines)) if lines[j] == "```")
        mark = _MARK.fullmatch(lines[index - 1]) if index else None
        blocks.append(
            Block(
                line=index + 1,
                language=opening["language"],
                body="".join(line + "\n" for line in lines[index + 1 : end]),
                kind=mark["kind"] if mark else None,
                value=mark["value"] if mark else "",
            )
        )
        index = end + 1
    return blocks


def readme_snippet(name: str) -> str:
    found = {block.value: block.body for block in readme_blocks() if block.kind == "snippet"}
    assert name in found, f"README.md has no snippet {name!r} (it has {sorted(found)})"
    return found[name]


def readme_files() -> dict[str, str]:
    """The blocks marked as a repository file's content, by path."""
    return {block.value: block.body for block in readme_blocks() if block.kind == "file"}


def readme_commands(name: str) -> list[str]:
    """The commands of a console snippet, each as one shell line in its fullest documented form.

    In a transcript (lines starting `$ `) only those lines are commands, the rest is output.
    Continuation lines are joined, trailing `  # comments` dropped, and optional parts kept
    without their brackets (`[--json]` -> `--json`; of `[a | b]` the first, `a`).
    """
    lines = readme_snippet(name).splitlines()
    transcript = any(line.startswith("$ ") for line in lines)
    joined: list[str] = []
    pending = ""
    for line in lines:
        if transcript and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        line = re.sub(r"\s{2,}#.*$", "", line)
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        joined.append(pending + line.strip())
        pending = ""
    return [_fullest(command) for command in joined if command]


def _fullest(command: str) -> str:
    return re.sub(r"\[([^\[\]]+)\]", lambda group: group[1].split(" | ")[0], command)


def readme_transcript_output(name: str) -> str:
    """What a transcript snippet shows its commands printing (the lines not starting `$ `)."""
    return "".join(line + "\n" for line in readme_snippet(name).splitlines() if not line.startswith("$ "))


# ---- running them -------------------------------------------------------------------------------------


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: the test tools and this venv's scripts on PATH, none of the
    test run's RAGOPS_ settings or API keys."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAGOPS_", "ANTHROPIC_"))}
    env["PATH"] = f"{TOOLS_BIN}:{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return {**env, **extra}


def shell(command: str, env: Mapping[str, str], cwd: Path = REPO_ROOT, timeout: float = 60) -> str:
    """One README command through bash, as a user pastes it; its stdout, or the test fails with its stderr."""
    result = subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\nexit {result.returncode}: {result.stderr}{result.stdout}"
    return result.stdout


def curl(command: str, port: int) -> dict[str, Any]:
    """A README `curl ... localhost:8080 ...` line, sent to `port` instead; its JSON answer."""
    assert command.startswith("curl ") and "localhost:8080" in command, command
    answer: dict[str, Any] = json.loads(shell(command.replace("localhost:8080", f"localhost:{port}"), user_env()))
    return answer
