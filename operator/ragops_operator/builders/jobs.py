"""The build and eval Jobs of a KnowledgeBaseVersion: `ragops kb build` and `ragops kb eval` in a pod.

The command lines are the `ragops kb` CLI's contract (see ragops_runtime.cli): every spec
parameter becomes a flag, sources become mounted volumes or URLs, and credentials come only
from secretKeyRef env vars the CLI reads itself (RAGOPS_DSN, RAGOPS_EMBEDDING_API_KEY).

Pure: this module must not do I/O, read the clock, or import Kopf or a Kubernetes client. Every
spec the API accepts builds valid Jobs: paths, globs and ConfigMap keys that could lead out of their
volume are refused by the schema (api.common's VolumePath, FileGlob, ConfigMapKey), not here.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ..api.kinds import KNOWLEDGE_BASE_VERSION
from ..api.knowledgebaseversion import PVC_DEFAULT_INCLUDE, PVC_DEFAULT_PATH, KnowledgeBaseVersionSpec
from .common import (
    Manifest,
    object_meta,
    restricted_container_security_context,
    restricted_pod_security_context,
    secret_env,
    tmp_mount,
    tmp_volume,
)
from .naming import child_name, common_labels
from .owner import owner_reference

BUILD_COMPONENT = "build"
EVAL_COMPONENT = "eval"

BUILD_DEADLINE_SECONDS = 3600
EVAL_DEADLINE_SECONDS = 1800
BACKOFF_LIMIT = 2
TTL_AFTER_FINISHED_SECONDS = 86400
USAGE_ERROR_EXIT_CODE = 2
"""`ragops kb` exits 2 on bad usage: the same arguments fail the same way, so retrying is waste."""

DSN_ENV = "RAGOPS_DSN"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
"""Set by the Job controller in every pod of an Indexed Job (from its completion index annotation)."""
EMBEDDING_API_KEY_ENV = "RAGOPS_EMBEDDING_API_KEY"

CONFIGMAP_SOURCES_ROOT = "/sources/configmap"
PVC_SOURCES_ROOT = "/sources/pvc"
GOLDEN_MOUNT = "/golden"


def job_resources() -> Manifest:
    """Resources of a build or eval container (a fresh dict: manifests never share nested state).

    The KnowledgeBaseVersion API has no field for them yet. Requests keep the Jobs schedulable in
    a namespace whose ResourceQuota demands them; the memory limit keeps one huge corpus from
    taking a node down with it.
    """
    return {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


@dataclass(frozen=True)
class VersionContext:
    """Everything the Jobs of one KnowledgeBaseVersion are built from; `image` is the ragops image."""

    name: str
    namespace: str
    uid: str
    spec: KnowledgeBaseVersionSpec
    image: str


@dataclass(frozen=True)
class _Sources:
    arguments: list[str]
    volumes: list[Manifest]
    mounts: list[Manifest]


def _sources(spec: KnowledgeBaseVersionSpec) -> _Sources:
    """The `--source` arguments and the read-only volumes behind them, in spec order.

    A ConfigMap or claim named by several sources is mounted once (two volumes cannot share a
    mount path): a ConfigMap's key selections are merged, all keys when any source takes all,
    and its directory is passed once, so no document is ingested twice.
    """
    config_maps: dict[str, list[str] | None] = {}
    claims: list[str] = []
    arguments: list[str] = []
    for source in spec.sources:
        if source.config_map is not None:
            name, keys = source.config_map.name, source.config_map.keys
            if name not in config_maps:
                config_maps[name] = list(keys) if keys is not None else None
                arguments.append(f"{CONFIGMAP_SOURCES_ROOT}/{name}")
            else:
                known = config_maps[name]
                config_maps[name] = None if known is None or keys is None else known + keys
        elif source.url is not None:
            arguments.append(source.url)
        elif source.pvc is not None:
            pvc = source.pvc
            mount = f"{PVC_SOURCES_ROOT}/{pvc.claim_name}"
            if pvc.claim_name not in claims:
                claims.append(pvc.claim_name)
            # The schema refuses ".." segments, so normalising cannot lead out of the claim into the
            # container's own filesystem (/proc/self/environ holds the DSN); it only tidies "./".
            directory = posixpath.normpath(f"{mount}/{pvc.path or PVC_DEFAULT_PATH}")
            for pattern in pvc.include or PVC_DEFAULT_INCLUDE:
                arguments.append(posixpath.normpath(f"{directory}/{pattern}"))

    volumes: list[Manifest] = []
    mounts: list[Manifest] = []
    for index, (name, keys) in enumerate(config_maps.items()):
        volume = f"configmap-{index}"
        config_map: Manifest = {"name": name}
        if keys is not None:
            config_map["items"] = [{"key": key, "path": key} for key in dict.fromkeys(keys)]
        volumes.append({"name": volume, "configMap": config_map})
        mounts.append({"name": volume, "mountPath": f"{CONFIGMAP_SOURCES_ROOT}/{name}", "readOnly": True})
    for index, claim in enumerate(claims):
        volume = f"pvc-{index}"
        volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": volume, "mountPath": f"{PVC_SOURCES_ROOT}/{claim}", "readOnly": True})
    return _Sources(arguments=list(dict.fromkeys(arguments)), volumes=volumes, mounts=mounts)


def _credentials(spec: KnowledgeBaseVersionSpec) -> list[Manifest]:
    # No `--dsn` on the command line: the CLI reads RAGOPS_DSN itself, so the DSN is in neither
    # the Job object nor the process's argv (which `$(RAGOPS_DSN)` expansion would put it in,
    # visible to `ps` on the node).
    env = [secret_env(DSN_ENV, spec.store.dsn_secret_ref)]
    if spec.embedding.api_key_secret_ref is not None:
        env.append(secret_env(EMBEDDING_API_KEY_ENV, spec.embedding.api_key_secret_ref))
    return env


def _job(
    ctx: VersionContext,
    component: str,
    command: list[str],
    deadline_seconds: int,
    volumes: list[Manifest],
    mounts: list[Manifest],
    *,
    pods: int = 1,
) -> Manifest:
    owner = owner_reference(KNOWLEDGE_BASE_VERSION.api_version, KNOWLEDGE_BASE_VERSION.kind, ctx.name, ctx.uid)
    labels = common_labels(KNOWLEDGE_BASE_VERSION.kind, ctx.name, component)
    container: Manifest = {
        "name": component,
        "image": ctx.image,
        "command": command,
        "env": _credentials(ctx.spec),
        "resources": job_resources(),
        "securityContext": restricted_container_security_context(),
        "volumeMounts": [*mounts, tmp_mount()],
    }
    retries: Manifest = {"backoffLimit": BACKOFF_LIMIT}
    if pods > 1:
        # One pod per completion index, all at once; a failed index is retried alone, up to the
        # same limit as a one-pod Job, while the others carry on.
        retries = {
            "completionMode": "Indexed",
            "completions": pods,
            "parallelism": pods,
            "backoffLimitPerIndex": BACKOFF_LIMIT,
        }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        # A deterministic name: a restarted operator finds the Job it created instead of
        # starting a second build of the same version.
        "metadata": object_meta(child_name(ctx.name, component), ctx.namespace, labels, owner),
        "spec": {
            **retries,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_SECONDS,
            # A replacement pod starts only once the failed one is gone: two builds of one
            # version (or of one shard of it) never write to the store at the same time.
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": component,
                            "operator": "In",
                            "values": [USAGE_ERROR_EXIT_CODE],
                        },
                    },
                    # A drained node or a preempted pod is not the Job's failure: retry without
                    # spending the backoff limit.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": restricted_pod_security_context(),
                    "containers": [container],
                    "volumes": [*volumes, tmp_volume("1Gi")],
                },
            },
        },
    }


def build_build_job(ctx: VersionContext) -> Manifest:
    """The Job running `ragops kb build` for this version, every spec parameter as a flag.

    With `spec.build.parallelism` N above 1, an Indexed Job of N pods, pod i running shard i of
    N (`--shard-index $(JOB_COMPLETION_INDEX)`, an env var the Job controller sets from the pod's
    completion index): the last shard to finish completes the version, so the eval Job, created
    once this Job succeeds, finds it built as after a one-pod build.
    """
    spec = ctx.spec
    sources = _sources(spec)
    chunking, embedding, index = spec.chunking, spec.embedding, spec.index
    command = ["ragops", "kb", "build", "--kb", spec.knowledge_base, "--version", ctx.name]
    for source in sources.arguments:
        command += ["--source", source]
    command += [
        "--chunk-strategy", chunking.strategy,
        "--chunk-size", str(chunking.size),
        "--chunk-overlap", str(chunking.overlap),
        "--embedding-provider", embedding.provider,
        "--embedding-model", embedding.resolved_model,
        "--embedding-dimensions", str(embedding.resolved_dimensions),
    ]  # fmt: skip
    if embedding.endpoint is not None:
        command += ["--embedding-endpoint", embedding.endpoint]
    command += [
        "--batch-size", str(embedding.batch_size),
        "--index-m", str(index.m),
        "--index-ef-construction", str(index.ef_construction),
        "--distance", index.distance,
    ]  # fmt: skip
    pods = spec.build.parallelism
    if pods > 1:
        command += ["--shard-index", f"$({COMPLETION_INDEX_ENV})", "--shard-count", str(pods)]
    command.append("--json")
    return _job(ctx, BUILD_COMPONENT, command, BUILD_DEADLINE_SECONDS, sources.volumes, sources.mounts, pods=pods)


def build_eval_job(ctx: VersionContext) -> Manifest:
    """The Job running `ragops kb eval` on the golden set, the gate's thresholds as flags.

    The eval uses the CLI's default hybrid retrieval; a version is judged on its own, not on
    the retrieval settings of whichever RagDeployment serves it later.
    """
    spec = ctx.spec
    golden = spec.golden_set
    key = golden.config_map_ref.key
    thresholds = golden.thresholds
    command = [
        "ragops", "kb", "eval",
        "--kb", spec.knowledge_base,
        "--version", ctx.name,
        "--golden", f"{GOLDEN_MOUNT}/{key}",
        "--k", str(golden.k),
        "--min-precision", str(thresholds.precision_at_k),
        "--min-recall", str(thresholds.recall_at_k),
        "--min-mrr", str(thresholds.mrr),
        "--min-ndcg", str(thresholds.ndcg_at_k),
    ]  # fmt: skip
    if thresholds.answer_pass_rate is not None:
        # Recorded for completeness: the CLI checks it only with --check-answers, which needs a
        # generator the KnowledgeBaseVersion does not configure.
        command += ["--min-answer-pass-rate", str(thresholds.answer_pass_rate)]
    command.append("--json")
    volume = {
        "name": "golden",
        "configMap": {"name": golden.config_map_ref.name, "items": [{"key": key, "path": key}]},
    }
    mount = {"name": "golden", "mountPath": GOLDEN_MOUNT, "readOnly": True}
    return _job(ctx, EVAL_COMPONENT, command, EVAL_DEADLINE_SECONDS, [volume], [mount])
