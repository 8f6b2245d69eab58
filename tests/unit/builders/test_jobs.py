"""The build and eval Jobs: sources as volumes and flags, the CLI contract, and Job lifecycle knobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import ValidationError

from ragops_operator.builders import Manifest, build_build_job, build_eval_job
from ragops_runtime.cli import kb

from .scenarios import KBV_EXAMPLES, version_context


def container(job: Manifest) -> Manifest:
    spec: Manifest = job["spec"]["template"]["spec"]["containers"][0]
    return spec


def flag_values(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command) if word == flag]


def mounts(job: Manifest) -> dict[str, Manifest]:
    return {mount["mountPath"]: mount for mount in container(job)["volumeMounts"]}


def volumes(job: Manifest) -> dict[str, Manifest]:
    return {volume["name"]: volume for volume in job["spec"]["template"]["spec"]["volumes"]}


def with_sources(*sources: dict[str, Any]) -> Manifest:
    return build_build_job(version_context(patch={"sources": list(sources)}))


def test_a_config_map_source_is_mounted_read_only_and_passed_as_its_directory() -> None:
    job = with_sources({"configMap": {"name": "docs-src"}})
    assert flag_values(container(job)["command"], "--source") == ["/sources/configmap/docs-src"]
    mount = mounts(job)["/sources/configmap/docs-src"]
    assert mount["readOnly"] is True
    assert volumes(job)[mount["name"]]["configMap"] == {"name": "docs-src"}


def test_config_map_keys_become_items() -> None:
    job = with_sources({"configMap": {"name": "docs-src", "keys": ["intro.md", "faq.md"]}})
    volume = volumes(job)[mounts(job)["/sources/configmap/docs-src"]["name"]]
    assert volume["configMap"]["items"] == [
        {"key": "intro.md", "path": "intro.md"},
        {"key": "faq.md", "path": "faq.md"},
    ]


def test_a_url_source_is_passed_as_is() -> None:
    job = with_sources({"url": "https://example.org/handbook.md"})
    assert flag_values(container(job)["command"], "--source") == ["https://example.org/handbook.md"]
    assert set(volumes(job)) == {"tmp"}


@pytest.mark.parametrize(
    ("path", "include", "expected"),
    [
        ("/docs", ["**/*.md"], ["/sources/pvc/corpus/docs/**/*.md"]),
        ("/", ["*.txt", "**/*.jsonl"], ["/sources/pvc/corpus/*.txt", "/sources/pvc/corpus/**/*.jsonl"]),
        ("/a/b/", ["x/*.md"], ["/sources/pvc/corpus/a/b/x/*.md"]),
    ],
)
def test_a_pvc_source_is_mounted_read_only_and_passed_as_one_glob_per_pattern(
    path: str, include: list[str], expected: list[str]
) -> None:
    job = with_sources({"pvc": {"claimName": "corpus", "path": path, "include": include}})
    assert flag_values(container(job)["command"], "--source") == expected
    mount = mounts(job)["/sources/pvc/corpus"]
    assert mount["readOnly"] is True
    assert volumes(job)[mount["name"]]["persistentVolumeClaim"] == {"claimName": "corpus", "readOnly": True}


def test_sources_keep_their_order_and_shared_volumes_are_mounted_once() -> None:
    job = with_sources(
        {"configMap": {"name": "a", "keys": ["1.md"]}},
        {"pvc": {"claimName": "corpus", "path": "/x", "include": ["*.md"]}},
        {"url": "https://example.org/u.md"},
        {"configMap": {"name": "a", "keys": ["2.md", "1.md"]}},
        {"pvc": {"claimName": "corpus", "path": "/y", "include": ["*.md"]}},
        {"configMap": {"name": "b"}},
        {"configMap": {"name": "b", "keys": ["only.md"]}},
    )
    assert flag_values(container(job)["command"], "--source") == [
        "/sources/configmap/a",
        "/sources/pvc/corpus/x/*.md",
        "https://example.org/u.md",
        "/sources/pvc/corpus/y/*.md",
        "/sources/configmap/b",
    ]
    by_mount = {path: volumes(job)[mount["name"]] for path, mount in mounts(job).items()}
    assert set(by_mount) == {"/sources/configmap/a", "/sources/configmap/b", "/sources/pvc/corpus", "/tmp"}
    assert by_mount["/sources/configmap/a"]["configMap"]["items"] == [
        {"key": "1.md", "path": "1.md"},
        {"key": "2.md", "path": "2.md"},
    ]
    assert "items" not in by_mount["/sources/configmap/b"]["configMap"], "one source takes every key"


@pytest.mark.parametrize(
    ("source", "loc"),
    [
        ({"pvc": {"claimName": "corpus", "path": "/../../proc"}}, ("sources", 0, "pvc", "path")),
        (
            {"pvc": {"claimName": "corpus", "path": "/docs", "include": ["*.md", "../../../*"]}},
            ("sources", 0, "pvc", "include", 1),
        ),
        ({"configMap": {"name": "docs-src", "keys": ["ok.md", "../escape"]}}, ("sources", 0, "configMap", "keys", 1)),
        ({"configMap": {"name": "docs-src", "keys": []}}, ("sources", 0, "configMap", "keys")),
    ],
)
def test_sources_no_valid_job_can_mount_never_reach_the_builder(source: dict[str, Any], loc: tuple[Any, ...]) -> None:
    # The builder trusts the spec: what would mount outside a volume is refused by the model (and
    # by the CRD, tests/integration/test_hostile_crs.py), naming the field.
    with pytest.raises(ValidationError) as caught:
        with_sources(source)
    assert [error["loc"][: len(loc)] for error in caught.value.errors()] == [loc]


def test_every_source_path_stays_within_its_volume() -> None:
    job = with_sources(
        {"pvc": {"claimName": "corpus", "path": "/docs/./a/", "include": ["./x/*.md", "**/.hidden/*.txt"]}}
    )
    assert flag_values(container(job)["command"], "--source") == [
        "/sources/pvc/corpus/docs/a/x/*.md",
        "/sources/pvc/corpus/docs/a/**/.hidden/*.txt",
    ]


def test_the_golden_set_is_mounted_at_golden() -> None:
    job = build_eval_job(version_context())
    assert flag_values(container(job)["command"], "--golden") == ["/golden/cases.yaml"]
    assert mounts(job)["/golden"]["readOnly"] is True
    assert volumes(job)["golden"]["configMap"] == {
        "name": "docs-golden",
        "items": [{"key": "cases.yaml", "path": "cases.yaml"}],
    }


@pytest.mark.parametrize("example", KBV_EXAMPLES)
def test_credentials_reach_the_cli_through_its_environment_only(example: str) -> None:
    ctx = version_context(example)
    for job in (build_build_job(ctx), build_eval_job(ctx)):
        env = {entry["name"]: entry for entry in container(job)["env"]}
        assert env["RAGOPS_DSN"]["valueFrom"] == {"secretKeyRef": {"name": "pg", "key": "dsn"}}
        has_key = ctx.spec.embedding.api_key_secret_ref is not None
        assert ("RAGOPS_EMBEDDING_API_KEY" in env) is has_key
        # The CLI reads RAGOPS_DSN itself: `--dsn $(RAGOPS_DSN)` would expand into argv.
        assert "--dsn" not in container(job)["command"]


@pytest.mark.parametrize(
    ("build", "component", "deadline"),
    [(build_build_job, "build", 3600), (build_eval_job, "eval", 1800)],
)
def test_job_lifecycle(build: Any, component: str, deadline: int) -> None:
    job = build(version_context())
    spec = job["spec"]
    assert job["metadata"]["name"] == f"docs-v1-{component}"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == component
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (
        2,
        deadline,
        86400,
    )
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert container(job)["name"] == component
    usage_rule = spec["podFailurePolicy"]["rules"][0]
    assert usage_rule["action"] == "FailJob" and usage_rule["onExitCodes"]["containerName"] == component


def test_job_names_stay_valid_for_long_version_names() -> None:
    job = build_build_job(version_context(name="v" * 253))
    assert len(job["metadata"]["name"]) <= 63 and job["metadata"]["name"].endswith("-build")


def parse(command: list[str]) -> dict[str, Any]:
    """Parses a Job's command with the real `ragops kb` CLI, types and ranges checked, nothing run."""
    assert command[:2] == ["ragops", "kb"]
    subcommand = kb.commands[command[2]]
    with subcommand.make_context(command[2], command[3:]) as context:
        return dict(context.params)


@pytest.mark.parametrize("example", KBV_EXAMPLES)
def test_the_build_command_is_one_the_cli_accepts_with_every_spec_parameter(
    example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAGOPS_DSN", raising=False)
    ctx = version_context(example)
    spec = ctx.spec
    params = parse(container(build_build_job(ctx))["command"])
    assert params["knowledge_base"] == spec.knowledge_base and params["version"] == ctx.name
    assert (params["chunk_strategy"], params["chunk_size"], params["chunk_overlap"]) == (
        spec.chunking.strategy,
        spec.chunking.size,
        spec.chunking.overlap,
    )
    embedding = spec.embedding
    assert (params["embedding_provider"], params["embedding_model"], params["embedding_dimensions"]) == (
        embedding.provider,
        embedding.resolved_model,
        embedding.resolved_dimensions,
    )
    assert params["embedding_endpoint"] == embedding.endpoint and params["batch_size"] == embedding.batch_size
    index = spec.index
    assert (params["index_m"], params["index_ef_construction"], params["distance"]) == (
        index.m,
        index.ef_construction,
        index.distance,
    )
    assert params["as_json"] is True and params["dsn"] is None


@pytest.mark.parametrize("answer_pass_rate", [None, 0.9])
def test_the_eval_command_is_one_the_cli_accepts_with_every_threshold(
    answer_pass_rate: float | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAGOPS_DSN", raising=False)
    ctx = version_context(patch={"goldenSet": {"k": 7, "thresholds": {"answerPassRate": answer_pass_rate}}})
    command = container(build_eval_job(ctx))["command"]
    # --golden must exist when parsed; stand in a local file for the mounted one.
    golden = tmp_path / "cases.yaml"
    golden.write_text("[]\n")
    params = parse([str(golden) if word == "/golden/cases.yaml" else word for word in command])
    thresholds = ctx.spec.golden_set.thresholds
    assert (params["knowledge_base"], params["version"], params["k"]) == ("docs", "docs-v1", 7)
    assert (params["min_precision"], params["min_recall"], params["min_mrr"], params["min_ndcg"]) == (
        thresholds.precision_at_k,
        thresholds.recall_at_k,
        thresholds.mrr,
        thresholds.ndcg_at_k,
    )
    assert params["min_answer_pass_rate"] == answer_pass_rate
    assert params["as_json"] is True


def test_parse_rejects_an_unknown_flag() -> None:
    # The CLI tests above are only worth something if a wrong flag fails them.
    with pytest.raises(click.UsageError):
        parse(["ragops", "kb", "build", "--kb", "docs", "--version", "v", "--source", "x", "--chunk-sise", "9"])


def test_a_parallel_build_is_an_indexed_job_of_one_pod_per_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGOPS_DSN", raising=False)
    job = build_build_job(version_context(patch={"build": {"parallelism": 3}}))
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    # A failed shard is retried alone, as often as a one-pod build; no Job-wide limit to share out.
    assert spec["backoffLimitPerIndex"] == 2 and "backoffLimit" not in spec
    assert spec["podReplacementPolicy"] == "Failed" and spec["template"]["spec"]["restartPolicy"] == "Never"
    command = container(job)["command"]
    assert flag_values(command, "--shard-index") == ["$(JOB_COMPLETION_INDEX)"]
    assert flag_values(command, "--shard-count") == ["3"]
    # The CLI accepts it once the kubelet has expanded the index the Job controller sets.
    params = parse([word.replace("$(JOB_COMPLETION_INDEX)", "2") for word in command])
    assert (params["shard_index"], params["shard_count"], params["as_json"]) == (2, 3, True)


def test_a_one_pod_build_is_a_plain_job() -> None:
    for patch in (None, {"build": {"parallelism": 1}}):
        job = build_build_job(version_context(patch=patch))
        assert "completionMode" not in job["spec"] and job["spec"]["backoffLimit"] == 2
        assert "--shard-index" not in container(job)["command"]


@pytest.mark.parametrize("parallelism", [0, 17, "2"])
def test_a_parallelism_outside_1_to_16_is_refused(parallelism: object) -> None:
    with pytest.raises(ValidationError, match="parallelism"):
        version_context(patch={"build": {"parallelism": parallelism}})


def test_the_api_limit_of_parallelism_is_the_runtime_limit_of_shards() -> None:
    from ragops_operator.api.knowledgebaseversion import MAX_BUILD_PARALLELISM
    from ragops_runtime.kb.sharding import MAX_SHARDS

    assert MAX_BUILD_PARALLELISM == MAX_SHARDS
