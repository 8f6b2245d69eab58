"""Every fenced block of the README is run or validated by a test, or says why it cannot be.

The blocks that need real servers run in tests/integration/test_readme_commands.py (and the
tests SNIPPET_TESTS names); here: the marks themselves, and what needs no server (make targets,
the layout's paths, the `kubectl ragops` commands parsed by the plugin's own parser).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from ragops_operator.plugin import main as kubectl_ragops
from tests.support.readme import (
    SNIPPET_TESTS,
    Block,
    readme_blocks,
    readme_commands,
    readme_snippet,
    readme_transcript_output,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_block_is_marked_run_by_a_test_or_not_run_with_a_reason() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 25
    unmarked = [block.where() for block in blocks if block.kind is None]
    assert not unmarked, (
        "fenced blocks without a mark: put `<!-- snippet: NAME -->` before each and run it from a test "
        f"(list it in tests/support/readme.py SNIPPET_TESTS), or `<!-- not-run: why -->`: {unmarked}"
    )
    snippets = [block.value for block in blocks if block.kind == "snippet"]
    assert len(snippets) == len(set(snippets)), f"snippet names repeat: {snippets}"
    assert set(snippets) == set(SNIPPET_TESTS), "SNIPPET_TESTS must name exactly the README's snippets"
    not_run = [block for block in blocks if block.kind == "not-run"]
    # Commands for the user's own registry or laptop only; everything that can run here does.
    assert len(not_run) <= 2, [block.where() for block in not_run]
    assert all(len(block.value) > 20 for block in not_run), "a not-run mark says why"


def test_each_snippet_names_a_test_that_reads_it() -> None:
    for name, node in SNIPPET_TESTS.items():
        path, function = node.split("::")
        source = (REPO_ROOT / path).read_text()
        start = source.find(f"\ndef {function}(")
        assert start >= 0, f"{name}: {node} does not exist"
        following = re.search(r"\n(?:def |@|class )", source[start + 1 :])
        body = source[start : start + 1 + following.start()] if following else source[start:]
        # The function names the snippet, or takes it as a parameter from a list that does.
        assert f'"{name}"' in body or f'"{name}"' in source[max(0, start - 400) : start], f"{node} never reads {name}"


def test_an_unmarked_block_is_found() -> None:
    text = (
        "Intro\n\n<!-- snippet: one -->\n```console\nmake test\n```\n\n"
        "```yaml\na: 1\n```\n<!-- not-run: why -->\n```\nx\n```\n"
    )
    assert readme_blocks(text) == [
        Block(line=4, language="console", body="make test\n", kind="snippet", value="one"),
        Block(line=8, language="yaml", body="a: 1\n", kind=None, value=""),
        Block(line=12, language="", body="x\n", kind="not-run", value="why"),
    ]


def test_commands_are_joined_stripped_of_comments_and_in_their_fullest_form() -> None:
    assert readme_commands("kb-commands")[3] == "ragops kb rollback --embedded --kb docs --to v0"
    assert readme_commands("cost-commands")[-1] == (
        "ragops cost estimate --queries-per-month 100000 --context-tokens 3000 --output-tokens 300 "
        "--prices prices.yaml --max-cost-per-query 0.01 --output json"
    )
    assert readme_commands("invalid-apply") == ["kubectl apply -f bad.yaml"]
    assert readme_transcript_output("invalid-apply").startswith('The RagDeployment "docs" is invalid: ')


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE))


def test_every_make_target_the_readme_names_exists() -> None:
    targets = make_targets()
    makefile = (REPO_ROOT / "Makefile").read_text()
    for name in ("setup", "development", "bench"):
        for command in readme_commands(name):
            words = shlex.split(command)
            assert words[0] == "make", command
            for word in words[1:]:
                if "=" in word:
                    variable = word.split("=")[0]
                    assert f"$({variable})" in makefile, f"{command}: the Makefile never reads {variable}"
                else:
                    assert word in targets, f"{command}: no target {word!r} in the Makefile"
    # And the make commands in running text.
    for target in re.findall(r"`make ([a-z][a-z0-9-]*)`", (REPO_ROOT / "README.md").read_text()):
        assert target in targets, f"README names `make {target}`, which the Makefile lacks"


def test_the_layout_names_paths_that_exist() -> None:
    parent = ""
    checked = 0
    for line in readme_snippet("layout").splitlines():
        if line.startswith(" " * 20):
            continue  # a description's second line
        indented = line.startswith(" ")
        column = re.split(r"\s{2,}", line.strip())[0]  # the paths, then the description
        for token in re.split(r"[ ,]+", column):
            path = parent + token if indented else token
            assert (REPO_ROOT / path).exists(), f"the README's layout names {path}, which does not exist"
            checked += 1
            if not indented:
                parent = token
    assert checked >= 25


def parse_plugin(command: str) -> None:
    """Parses `kubectl ragops ...` with the plugin's own click parser (options, arguments, choices)."""
    words = shlex.split(command)
    assert words[:2] == ["kubectl", "ragops"], command
    assert isinstance(kubectl_ragops, click.Group)
    subcommand = kubectl_ragops.get_command(click.Context(kubectl_ragops), words[2])
    assert subcommand is not None, f"{command}: the plugin has no command {words[2]!r}"
    subcommand.make_context(words[2], words[3:]).close()  # raises click.UsageError on a wrong option


def test_the_kubectl_ragops_commands_parse() -> None:
    commands = readme_commands("rollout-commands") + readme_commands("dashboard-command")
    assert [shlex.split(command)[2] for command in commands] == [
        "status",
        "promote",
        "abort",
        "pause",
        "set-weight",
        "retry",
        "dashboard",
    ]
    for command in commands:
        parse_plugin(command)
    # The dashboard prints its address at the default port, as shown.
    shown = readme_transcript_output("dashboard-command").strip()
    assert shown == "ragops dashboard: http://127.0.0.1:8484/ (Ctrl-C to stop)"
    dashboard = kubectl_ragops.get_command(click.Context(kubectl_ragops), "dashboard")
    assert dashboard is not None
    defaults = {parameter.name: parameter.default for parameter in dashboard.params}
    assert (defaults["port"], defaults.get("address", "127.0.0.1")) == (8484, "127.0.0.1")
