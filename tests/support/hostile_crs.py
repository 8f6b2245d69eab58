"""The hostile custom resources: one table of invalid objects and valid edge cases, both kinds.

Each case changes one of the examples (examples/knowledgebaseversion.yaml, ragdeployment.yaml) at
one or more paths. An invalid case names the field the apiserver's error must name; the same field
must be named when the operator's models refuse the spec (`python=False` marks the few cases only
the apiserver can judge: metadata, the envelope, pruning). A valid case must be accepted by both,
stored as the models default it, and build children the apiserver accepts too.

The classes of mistake each have a few cases, so a new field of a known type is caught by the type:
types (strings for numbers, objects for strings, null), names, sizes (huge strings, lists and
maps), quantities, resource names, requests above limits, image references, paths, globs and keys
that would leave their volume, URLs (schemes, credentials, whitespace, numeric IPv4 forms,
link-local and cloud metadata addresses), durations (zero, absurd, malformed), cross-field rules,
unknown fields, deep nesting, metadata labels and names.

Used by tests/unit/test_hostile_models.py (the Python mirror) and
tests/integration/test_hostile_crs.py (the real apiserver). Test data, not product code.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KBV = "kbv"
RAGD = "ragd"
EXAMPLE_FILES = {KBV: "knowledgebaseversion.yaml", RAGD: "ragdeployment.yaml"}
PLURALS = {KBV: "knowledgebaseversions", RAGD: "ragdeployments"}

Doc = dict[str, Any]


class _Delete:
    def __repr__(self) -> str:
        return "<deleted>"


DELETE: Any = _Delete()
"""As a value: remove the field."""


@dataclass(frozen=True)
class Deep:
    """A value nested `depth` objects deep ({"a": {"a": ... 1}}), written out as JSON text by `encode`."""

    depth: int


@dataclass(frozen=True)
class Invalid:
    id: str
    kind: str
    changes: dict[str, Any]
    field: str
    """The field the apiserver must name (and the models, unless python is False)."""
    python: bool = True


@dataclass(frozen=True)
class Valid:
    id: str
    kind: str
    changes: dict[str, Any]


def example(kind: str) -> Doc:
    document: Doc = yaml.safe_load((EXAMPLES / EXAMPLE_FILES[kind]).read_text())
    return document


_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]|\[([^\]]+)\]")


def parse_path(path: str) -> list[str | int]:
    """ "spec.sources[0].url" -> ["spec", "sources", 0, "url"]; "requests[nvidia.com/gpu]" keeps the key whole."""
    parts: list[str | int] = []
    for name, index, key in _TOKEN.findall(path):
        parts.append(name or (int(index) if index else key))
    return parts


def apply_changes(document: Doc, changes: dict[str, Any]) -> Doc:
    out = copy.deepcopy(document)
    for path, value in changes.items():
        *parents, leaf = parse_path(path)
        node: Any = out
        for part in parents:
            if isinstance(part, int):
                node = node[part]
            else:
                node = node.setdefault(part, {})
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = copy.deepcopy(value)
    return out


def document_of(case: Invalid | Valid) -> Doc:
    return apply_changes(example(case.kind), case.changes)


def encode(document: Doc) -> str:
    """JSON text of a document; `Deep` values are written out here (json.dumps would recurse)."""
    deep: dict[str, Deep] = {}

    def default(value: Any) -> Any:
        if isinstance(value, Deep):
            marker = f"@@deep-{len(deep)}@@"
            deep[marker] = value
            return marker
        raise TypeError(f"cannot encode {value!r}")

    text = json.dumps(document, default=default, ensure_ascii=False)
    for marker, value in deep.items():
        text = text.replace(json.dumps(marker), '{"a":' * value.depth + "1" + "}" * value.depth)
    return text


def python_value(document: Doc) -> Doc:
    """The document as the models see it: `Deep` values built as real nested dicts."""
    decoded: Doc = json.loads(encode(document))
    return decoded


# ---- shared values -----------------------------------------------------------------------------------

DIGEST = "sha256:" + "0123456789abcdef" * 4
LONG_NAME = ".".join(["a" * 63] * 4)[:253]  # a 253-character DNS subdomain
EMOJI_256 = "🦙" * 256  # characters outside the BMP: the apiserver and Python both count 256
SOURCES_100 = [{"configMap": {"name": f"src-{i}"}} for i in range(50)] + [
    {"url": f"https://docs.example.org/{i}.md"} for i in range(50)
]


def _url(url: str) -> dict[str, Any]:
    return {"spec.sources[1].url": url}


def _prometheus(url: str) -> dict[str, Any]:
    return {"spec.monitoring.prometheusUrl": url}


def _requests(**resources: Any) -> dict[str, Any]:
    return {"spec.runtime.resources": {"requests": resources, "limits": {"memory": "1Gi"}}}


def _image(image: str) -> dict[str, Any]:
    return {"spec.runtime.image": image}


URL_FIELD = "spec.sources[1].url"
PROMETHEUS_FIELD = "spec.monitoring.prometheusUrl"
REQUESTS = "spec.runtime.resources.requests"
IMAGE = "spec.runtime.image"

# ---- invalid: KnowledgeBaseVersion -----------------------------------------------------------------------

STRATEGY = "spec.rollout.strategy"
CANARY = f"{STRATEGY}.canary"
STEPS = f"{CANARY}.steps"
SHADOW = f"{STRATEGY}.shadow"


_REPEATED_STEPS: list[Doc] = [{"pause": {}}, {"pause": {"duration": "1s"}}, {"analysis": {"duration": "1h"}}]
EDGE_STEPS: list[Doc] = [
    {"setWeight": 0},
    {"setWeight": 100},
    {"shadow": {"percent": 0}},
    {"shadow": {"percent": 100}},
    *(step for _ in range(6) for step in _REPEATED_STEPS),
    *[{"pause": {"duration": "1h"}}] * 4,
]
"""50 steps (the most), every kind, weights and shares at both ends, durations at the timeout."""


def _canary(steps: list[Doc], **fields: Any) -> dict[str, Any]:
    return {STRATEGY: {"canary": {"steps": steps, **fields}}}


INVALID: list[Invalid] = [
    # types
    Invalid("kbv-name-is-a-number", KBV, {"spec.knowledgeBase": 5}, "spec.knowledgeBase"),
    Invalid("chunk-size-as-string", KBV, {"spec.chunking.size": "512"}, "spec.chunking.size"),
    Invalid("chunk-size-as-float", KBV, {"spec.chunking.size": 512.5}, "spec.chunking.size"),
    Invalid("chunk-size-as-bool", KBV, {"spec.chunking.size": True}, "spec.chunking.size"),
    Invalid("threshold-as-string", KBV, {"spec.goldenSet.thresholds.mrr": "0.5"}, "spec.goldenSet.thresholds.mrr"),
    Invalid("threshold-as-bool", KBV, {"spec.goldenSet.thresholds.mrr": False}, "spec.goldenSet.thresholds.mrr"),
    Invalid("sources-as-object", KBV, {"spec.sources": {"url": "https://a.example/x.md"}}, "spec.sources"),
    Invalid("embedding-as-string", KBV, {"spec.embedding": "hashing"}, "spec.embedding"),
    Invalid("embedding-model-as-list", KBV, {"spec.embedding.model": ["m"]}, "spec.embedding.model"),
    # names
    Invalid("kb-name-uppercase", KBV, {"spec.knowledgeBase": "Docs_v1"}, "spec.knowledgeBase"),
    Invalid("kb-name-64-chars", KBV, {"spec.knowledgeBase": "a" * 64}, "spec.knowledgeBase"),
    Invalid("kb-name-empty", KBV, {"spec.knowledgeBase": ""}, "spec.knowledgeBase"),
    Invalid("kb-name-leading-dash", KBV, {"spec.knowledgeBase": "-docs"}, "spec.knowledgeBase"),
    Invalid("kb-name-with-dot", KBV, {"spec.knowledgeBase": "docs.v1"}, "spec.knowledgeBase"),
    Invalid("secret-name-uppercase", KBV, {"spec.store.dsnSecretRef.name": "PG"}, "spec.store.dsnSecretRef.name"),
    Invalid("secret-name-254", KBV, {"spec.store.dsnSecretRef.name": "a" * 254}, "spec.store.dsnSecretRef.name"),
    Invalid("secret-key-space", KBV, {"spec.store.dsnSecretRef.key": "dsn key"}, "spec.store.dsnSecretRef.key"),
    Invalid("secret-key-dotdot", KBV, {"spec.store.dsnSecretRef.key": ".."}, "spec.store.dsnSecretRef.key"),
    Invalid("secret-key-traversal", KBV, {"spec.store.dsnSecretRef.key": "../dsn"}, "spec.store.dsnSecretRef.key"),
    Invalid("secret-key-254", KBV, {"spec.store.dsnSecretRef.key": "k" * 254}, "spec.store.dsnSecretRef.key"),
    Invalid("store-missing", KBV, {"spec.store": DELETE}, "spec.store"),
    Invalid("secret-name-missing", KBV, {"spec.store.dsnSecretRef.name": DELETE}, "spec.store.dsnSecretRef.name"),
    # sources
    Invalid("sources-missing", KBV, {"spec.sources": DELETE}, "spec.sources"),
    Invalid("sources-empty", KBV, {"spec.sources": []}, "spec.sources"),
    Invalid("source-empty", KBV, {"spec.sources": [{}]}, "spec.sources[0]"),
    Invalid(
        "source-url-and-pvc",
        KBV,
        {"spec.sources": [{"url": "https://a.example/x.md", "pvc": {"claimName": "c"}}]},
        "spec.sources[0]",
    ),
    Invalid("sources-101", KBV, {"spec.sources": [*SOURCES_100, {"url": "https://a.example/x.md"}]}, "spec.sources"),
    # URLs
    Invalid("url-ftp", KBV, _url("ftp://a.example/x.md"), URL_FIELD),
    Invalid("url-no-scheme", KBV, _url("a.example/x.md"), URL_FIELD),
    Invalid("url-space", KBV, _url("https://a.example/x y.md"), URL_FIELD),
    Invalid("url-newline", KBV, _url("https://a.example/x.md\nHost: evil"), URL_FIELD),
    Invalid("url-nul", KBV, _url("https://a.example/x\u0000.md"), URL_FIELD),
    Invalid("url-non-ascii-host", KBV, _url("https://exämple.org/x.md"), URL_FIELD),
    Invalid("url-credentials", KBV, _url("https://user:secret@a.example/x.md"), URL_FIELD),
    Invalid("url-at-host-confusion", KBV, _url("https://a.example@169.254.169.254/"), URL_FIELD),
    Invalid("url-2049-chars", KBV, _url("https://a.example/" + "x" * 2031), URL_FIELD),
    Invalid("url-aws-metadata", KBV, _url("http://169.254.169.254/latest/meta-data/"), URL_FIELD),
    Invalid("url-ecs-credentials", KBV, _url("http://169.254.170.2/v2/credentials"), URL_FIELD),
    Invalid("url-gce-metadata", KBV, _url("http://metadata.google.internal/computeMetadata/v1/"), URL_FIELD),
    Invalid("url-gce-metadata-case-dot", KBV, _url("http://METADATA.Google.Internal./x"), URL_FIELD),
    Invalid("url-gce-short-name", KBV, _url("http://metadata/computeMetadata/v1/"), URL_FIELD),
    Invalid("url-alibaba-metadata", KBV, _url("http://100.100.100.200/latest/meta-data/"), URL_FIELD),
    Invalid("url-azure-wireserver", KBV, _url("http://168.63.129.16/machine"), URL_FIELD),
    Invalid("url-ec2-instance-data", KBV, _url("http://instance-data.ec2.internal/latest/"), URL_FIELD),
    Invalid("url-aws-ipv6-metadata", KBV, _url("http://[fd00:ec2::254]/latest/meta-data/"), URL_FIELD),
    Invalid("url-aws-ipv6-long-form", KBV, _url("http://[FD00:0EC2:0:0:0:0:0:254]/"), URL_FIELD),
    Invalid("url-ipv6-link-local", KBV, _url("http://[fe80::1]:8080/"), URL_FIELD),
    Invalid("url-ipv4-mapped-ipv6", KBV, _url("http://[::ffff:169.254.169.254]/"), URL_FIELD),
    Invalid("url-ipv4-mapped-ipv6-hex", KBV, _url("http://[::ffff:a9fe:a9fe]/"), URL_FIELD),
    Invalid("url-nat64", KBV, _url("http://[64:ff9b::a9fe:a9fe]/"), URL_FIELD),
    Invalid("url-ipv4-as-integer", KBV, _url("http://2852039166/latest/"), URL_FIELD),
    Invalid("url-ipv4-as-hex", KBV, _url("http://0xa9fea9fe/latest/"), URL_FIELD),
    Invalid("url-ipv4-as-octal", KBV, _url("http://0251.0376.0251.0376/"), URL_FIELD),
    Invalid("url-ipv4-short-form", KBV, _url("http://169.254.43518/"), URL_FIELD),
    Invalid("url-ipv4-leading-zero", KBV, _url("http://169.254.169.0254/"), URL_FIELD),
    # ConfigMap sources
    Invalid(
        "configmap-name-space", KBV, {"spec.sources[0].configMap.name": "docs src"}, "spec.sources[0].configMap.name"
    ),
    Invalid("configmap-keys-empty", KBV, {"spec.sources[0].configMap.keys": []}, "spec.sources[0].configMap.keys"),
    Invalid(
        "configmap-key-traversal",
        KBV,
        {"spec.sources[0].configMap.keys": ["ok.md", "../secret"]},
        "spec.sources[0].configMap.keys[1]",
    ),
    Invalid(
        "configmap-key-dotdot", KBV, {"spec.sources[0].configMap.keys": [".."]}, "spec.sources[0].configMap.keys[0]"
    ),
    Invalid("configmap-key-dot", KBV, {"spec.sources[0].configMap.keys": ["."]}, "spec.sources[0].configMap.keys[0]"),
    Invalid(
        "configmap-key-slash", KBV, {"spec.sources[0].configMap.keys": ["a/b"]}, "spec.sources[0].configMap.keys[0]"
    ),
    Invalid("configmap-key-empty", KBV, {"spec.sources[0].configMap.keys": [""]}, "spec.sources[0].configMap.keys[0]"),
    Invalid(
        "configmap-keys-1001",
        KBV,
        {"spec.sources[0].configMap.keys": [f"k{i}.md" for i in range(1001)]},
        "spec.sources[0].configMap.keys",
    ),
    # PVC sources
    Invalid(
        "pvc-claim-uppercase",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "Corpus"}}},
        "spec.sources[1].pvc.claimName",
    ),
    Invalid(
        "pvc-path-relative",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "path": "docs"}}},
        "spec.sources[1].pvc.path",
    ),
    Invalid(
        "pvc-path-traversal",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "path": "/docs/../../proc/self"}}},
        "spec.sources[1].pvc.path",
    ),
    Invalid(
        "pvc-path-parent",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "path": "/.."}}},
        "spec.sources[1].pvc.path",
    ),
    Invalid(
        "pvc-path-newline",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "path": "/docs\n"}}},
        "spec.sources[1].pvc.path",
    ),
    Invalid(
        "pvc-path-1025",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "path": "/" + "d" * 1024}}},
        "spec.sources[1].pvc.path",
    ),
    Invalid(
        "include-traversal",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "include": ["*.md", "../../*"]}}},
        "spec.sources[1].pvc.include[1]",
    ),
    Invalid(
        "include-absolute",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "include": ["/etc/*"]}}},
        "spec.sources[1].pvc.include[0]",
    ),
    Invalid(
        "include-inner-traversal",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "include": ["docs/../../x/*.md"]}}},
        "spec.sources[1].pvc.include[0]",
    ),
    Invalid(
        "include-only-dots",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "include": ["./."]}}},
        "spec.sources[1].pvc.include[0]",
    ),
    Invalid(
        "include-empty-list",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "include": []}}},
        "spec.sources[1].pvc.include",
    ),
    Invalid(
        "include-65",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "include": ["*.md"] * 65}}},
        "spec.sources[1].pvc.include",
    ),
    Invalid(
        "include-257-chars",
        KBV,
        {"spec.sources[1]": {"pvc": {"claimName": "c", "include": ["x" * 257]}}},
        "spec.sources[1].pvc.include[0]",
    ),
    # chunking, embedding, index
    Invalid("chunking-strategy", KBV, {"spec.chunking.strategy": "semantic"}, "spec.chunking.strategy"),
    Invalid("chunk-size-10", KBV, {"spec.chunking.size": 10}, "spec.chunking.size"),
    Invalid("chunk-size-9000", KBV, {"spec.chunking.size": 9000}, "spec.chunking.size"),
    Invalid("overlap-negative", KBV, {"spec.chunking.overlap": -1}, "spec.chunking.overlap"),
    Invalid("overlap-not-below-size", KBV, {"spec.chunking.overlap": 600}, "spec.chunking.overlap"),
    Invalid("embedding-provider", KBV, {"spec.embedding.provider": "cohere"}, "spec.embedding.provider"),
    Invalid("dimensions-4096", KBV, {"spec.embedding.dimensions": 4096}, "spec.embedding.dimensions"),
    Invalid("dimensions-0", KBV, {"spec.embedding.dimensions": 0}, "spec.embedding.dimensions"),
    Invalid("openai-without-endpoint", KBV, {"spec.embedding.provider": "openai"}, "spec.embedding.endpoint"),
    Invalid(
        "openai-without-model",
        KBV,
        {"spec.embedding": {"provider": "openai", "endpoint": "https://api.openai.com/v1"}},
        "spec.embedding.model",
    ),
    Invalid("embedding-model-empty", KBV, {"spec.embedding.model": ""}, "spec.embedding.model"),
    Invalid("embedding-model-257", KBV, {"spec.embedding.model": "m" * 257}, "spec.embedding.model"),
    Invalid(
        "embedding-model-newline", KBV, {"spec.embedding.model": "text-embedding-3\nsmall"}, "spec.embedding.model"
    ),
    Invalid("embedding-model-escape", KBV, {"spec.embedding.model": "m\u001b[31m"}, "spec.embedding.model"),
    Invalid("embedding-model-1mib", KBV, {"spec.embedding.model": "m" * (1 << 20)}, "spec.embedding.model"),
    Invalid(
        "embedding-endpoint-metadata",
        KBV,
        {"spec.embedding": {"provider": "openai", "model": "m", "endpoint": "http://169.254.169.254/v1"}},
        "spec.embedding.endpoint",
    ),
    Invalid(
        "embedding-endpoint-ipv6-metadata",
        KBV,
        {"spec.embedding": {"provider": "openai", "model": "m", "endpoint": "http://[fd00:ec2::254]/v1"}},
        "spec.embedding.endpoint",
    ),
    Invalid(
        "embedding-endpoint-decimal-ip",
        KBV,
        {"spec.embedding": {"provider": "openai", "model": "m", "endpoint": "http://167772161/v1"}},
        "spec.embedding.endpoint",
    ),
    Invalid("batch-size-0", KBV, {"spec.embedding.batchSize": 0}, "spec.embedding.batchSize"),
    Invalid(
        "static-dimensions-384",
        KBV,
        {"spec.embedding": {"provider": "static", "dimensions": 384}},
        "spec.embedding.dimensions",
    ),
    Invalid(
        "static-foreign-model",
        KBV,
        {"spec.embedding": {"provider": "static", "model": "all-MiniLM-L6-v2"}},
        "spec.embedding.model",
    ),
    Invalid(
        "hashing-foreign-model",
        KBV,
        {"spec.embedding": {"provider": "hashing", "model": "wordllama-l2-supercat"}},
        "spec.embedding.model",
    ),
    Invalid(
        "embedding-key-traversal",
        KBV,
        {"spec.embedding.apiKeySecretRef": {"name": "openai", "key": "../key"}},
        "spec.embedding.apiKeySecretRef.key",
    ),
    Invalid("hnsw-m-200", KBV, {"spec.index.m": 200}, "spec.index.m"),
    Invalid("ef-construction-below-2m", KBV, {"spec.index.efConstruction": 20}, "spec.index.efConstruction"),
    Invalid("index-distance", KBV, {"spec.index.distance": "dot"}, "spec.index.distance"),
    Invalid("index-type", KBV, {"spec.index.type": "ivfflat"}, "spec.index.type"),
    # golden set
    Invalid("recall-above-1", KBV, {"spec.goldenSet.thresholds.recallAtK": 1.5}, "spec.goldenSet.thresholds.recallAtK"),
    Invalid("mrr-negative", KBV, {"spec.goldenSet.thresholds.mrr": -0.1}, "spec.goldenSet.thresholds.mrr"),
    Invalid("golden-ref-missing", KBV, {"spec.goldenSet.configMapRef": DELETE}, "spec.goldenSet.configMapRef"),
    Invalid("golden-k-0", KBV, {"spec.goldenSet.k": 0}, "spec.goldenSet.k"),
    Invalid(
        "golden-key-traversal",
        KBV,
        {"spec.goldenSet.configMapRef.key": "../cases.yaml"},
        "spec.goldenSet.configMapRef.key",
    ),
    # unknown fields and nesting (kubectl asks for strict validation; see test_unknown_fields_*)
    Invalid("unknown-chunking-field", KBV, {"spec.chunking.sise": 600}, "spec.chunking.sise"),
    Invalid("unknown-threshold", KBV, {"spec.goldenSet.thresholds.f1": 0.5}, "spec.goldenSet.thresholds.f1"),
    Invalid("unknown-spec-field", KBV, {"spec.owner": "team-a"}, "spec.owner"),
    Invalid("deep-unknown-field", KBV, {"spec.chunking.extra": Deep(500)}, "spec.chunking.extra"),
    Invalid("deep-value-for-int", KBV, {"spec.chunking.size": Deep(500)}, "spec.chunking.size"),
    # the envelope and metadata: the apiserver's own validation
    Invalid("spec-missing", KBV, {"spec": DELETE}, "spec", python=False),
    Invalid("metadata-name-uppercase", KBV, {"metadata.name": "Docs_v1"}, "metadata.name", python=False),
    Invalid("label-key-invalid", KBV, {"metadata.labels": {"bad key!": "x"}}, "metadata.labels", python=False),
    Invalid("label-value-space", KBV, {"metadata.labels": {"team": "a b"}}, "metadata.labels", python=False),
    Invalid("label-value-64", KBV, {"metadata.labels": {"team": "a" * 64}}, "metadata.labels", python=False),
    Invalid(
        "label-prefix-invalid", KBV, {"metadata.labels": {"Example.COM/team": "a"}}, "metadata.labels", python=False
    ),
]

# ---- invalid: RagDeployment ---------------------------------------------------------------------------

INVALID += [
    # knowledge base reference
    Invalid("version-missing", RAGD, {"spec.knowledgeBase.version": DELETE}, "spec.knowledgeBase.version"),
    Invalid("kb-ref-uppercase", RAGD, {"spec.knowledgeBase.name": "Docs"}, "spec.knowledgeBase.name"),
    Invalid("version-254", RAGD, {"spec.knowledgeBase.version": "a" * 254}, "spec.knowledgeBase.version"),
    # runtime
    Invalid("replicas-negative", RAGD, {"spec.runtime.replicas": -1}, "spec.runtime.replicas"),
    Invalid("replicas-as-string", RAGD, {"spec.runtime.replicas": "two"}, "spec.runtime.replicas"),
    Invalid("replicas-numeric-string", RAGD, {"spec.runtime.replicas": "2"}, "spec.runtime.replicas"),
    Invalid("replicas-1001", RAGD, {"spec.runtime.replicas": 1001}, "spec.runtime.replicas"),
    Invalid("image-space", RAGD, _image("ghcr.io/acme/ragops:1 2"), IMAGE),
    Invalid("image-newline", RAGD, _image("ghcr.io/acme/ragops\n:latest"), IMAGE),
    Invalid("image-trailing-newline", RAGD, _image("ghcr.io/acme/ragops:1.0\n"), IMAGE),
    Invalid("image-empty", RAGD, _image(""), IMAGE),
    Invalid("image-uppercase-path", RAGD, _image("ghcr.io/Acme/RagOps:1.0"), IMAGE),
    Invalid("image-shell", RAGD, _image("ghcr.io/acme/ragops:1.0;rm -rf /"), IMAGE),
    Invalid("image-short-digest", RAGD, _image("ghcr.io/acme/ragops@sha256:abc"), IMAGE),
    Invalid("image-scheme", RAGD, _image("https://ghcr.io/acme/ragops:1.0"), IMAGE),
    Invalid("image-513", RAGD, _image("r/" + "a" * 511), IMAGE),
    Invalid("image-as-number", RAGD, _image(5), IMAGE),  # type: ignore[arg-type]
    # resources
    Invalid("cpu-negative-string", RAGD, _requests(cpu="-1"), f"{REQUESTS}.cpu"),
    Invalid("memory-negative", RAGD, _requests(memory="-512Mi"), f"{REQUESTS}.memory"),
    Invalid("cpu-negative-int", RAGD, _requests(cpu=-1), f"{REQUESTS}.cpu"),
    Invalid("cpu-words", RAGD, _requests(cpu="lots"), f"{REQUESTS}.cpu"),
    Invalid("memory-two-dots", RAGD, _requests(memory="1.5.5Gi"), f"{REQUESTS}.memory"),
    Invalid("cpu-dangling-exponent", RAGD, _requests(cpu="1e"), f"{REQUESTS}.cpu"),
    Invalid("cpu-fraction-exponent", RAGD, _requests(cpu="1e1.5"), f"{REQUESTS}.cpu"),
    Invalid("memory-lowercase-unit", RAGD, _requests(memory="512mi"), f"{REQUESTS}.memory"),
    Invalid("cpu-33-chars", RAGD, _requests(cpu="1" * 33), f"{REQUESTS}.cpu"),
    Invalid("cpu-float", RAGD, _requests(cpu=0.5), f"{REQUESTS}.cpu"),
    Invalid("cpu-bool", RAGD, _requests(cpu=True), f"{REQUESTS}.cpu"),
    Invalid(
        "memory-request-above-limit",
        RAGD,
        {"spec.runtime.resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
        REQUESTS,
    ),
    Invalid(
        "cpu-request-above-limit-mixed-forms",
        RAGD,
        {"spec.runtime.resources": {"requests": {"cpu": 2}, "limits": {"cpu": "1500m"}}},
        REQUESTS,
    ),
    Invalid("resource-unprefixed", RAGD, _requests(gpu=1), REQUESTS),
    Invalid("resource-uppercase-domain", RAGD, _requests(**{"Nvidia.com/GPU": 1}), REQUESTS),
    Invalid("resource-requests-prefix", RAGD, _requests(**{"requests.example.com/x": 1}), REQUESTS),
    Invalid("resource-native-domain", RAGD, _requests(**{"kubernetes.io/thing": 1}), REQUESTS),
    Invalid(
        "limit-unknown-resource",
        RAGD,
        {"spec.runtime.resources": {"requests": {}, "limits": {"memory": "1Gi", "storage": "10Gi"}}},
        "spec.runtime.resources.limits",
    ),
    Invalid(
        "limit-negative",
        RAGD,
        {"spec.runtime.resources": {"requests": {}, "limits": {"memory": "-1Gi"}}},
        "spec.runtime.resources.limits.memory",
    ),
    Invalid("extended-without-limit", RAGD, _requests(**{"nvidia.com/gpu": 1}), "spec.runtime.resources.limits"),
    Invalid(
        "hugepages-request-below-limit",
        RAGD,
        {
            "spec.runtime.resources": {
                "requests": {"memory": "1Gi", "hugepages-2Mi": "64Mi"},
                "limits": {"memory": "1Gi", "hugepages-2Mi": "128Mi"},
            }
        },
        "spec.runtime.resources.limits",
    ),
    Invalid(
        "requests-17-resources",
        RAGD,
        {
            "spec.runtime.resources": {
                "requests": {f"example.com/r{i}": 1 for i in range(17)},
                "limits": {f"example.com/r{i}": 1 for i in range(17)},
            }
        },
        REQUESTS,
    ),
    Invalid(
        "autoscaling-max-below-min",
        RAGD,
        {"spec.runtime.autoscaling.maxReplicas": 1},
        "spec.runtime.autoscaling.maxReplicas",
    ),
    Invalid(
        "autoscaling-max-missing",
        RAGD,
        {"spec.runtime.autoscaling.maxReplicas": DELETE},
        "spec.runtime.autoscaling.maxReplicas",
    ),
    Invalid(
        "autoscaling-cpu-101",
        RAGD,
        {"spec.runtime.autoscaling.targetCPUUtilization": 101},
        "spec.runtime.autoscaling.targetCPUUtilization",
    ),
    # retrieval and reranking
    Invalid("rerank-above-topk", RAGD, {"spec.retrieval.rerankTopK": 30}, "spec.retrieval.rerankTopK"),
    Invalid(
        "fusion-both-weights-zero",
        RAGD,
        {"spec.retrieval.fusion": {"vectorWeight": 0, "lexicalWeight": 0}},
        "spec.retrieval.fusion",
    ),
    Invalid(
        "fusion-weight-negative", RAGD, {"spec.retrieval.fusion.vectorWeight": -1}, "spec.retrieval.fusion.vectorWeight"
    ),
    Invalid("fusion-rrf-k-0", RAGD, {"spec.retrieval.fusion.rrfK": 0}, "spec.retrieval.fusion.rrfK"),
    Invalid("topk-0", RAGD, {"spec.retrieval.topK": 0}, "spec.retrieval.topK"),
    Invalid("hybrid-as-string", RAGD, {"spec.retrieval.hybrid": "true"}, "spec.retrieval.hybrid"),
    Invalid(
        "http-reranker-without-endpoint",
        RAGD,
        {"spec.retrieval.reranker.provider": "http"},
        "spec.retrieval.reranker.endpoint",
    ),
    Invalid(
        "reranker-metadata",
        RAGD,
        {"spec.retrieval.reranker": {"provider": "http", "endpoint": "http://169.254.169.254/rerank"}},
        "spec.retrieval.reranker.endpoint",
    ),
    Invalid(
        "reranker-gce-short-name",
        RAGD,
        {"spec.retrieval.reranker": {"provider": "http", "endpoint": "http://metadata:80/"}},
        "spec.retrieval.reranker.endpoint",
    ),
    Invalid(
        "reranker-hex-ip",
        RAGD,
        {"spec.retrieval.reranker": {"provider": "http", "endpoint": "http://10.0.0.0x1/rerank"}},
        "spec.retrieval.reranker.endpoint",
    ),
    Invalid(
        "reranker-model-newline",
        RAGD,
        {"spec.retrieval.reranker": {"provider": "none", "model": "bge\r\nx"}},
        "spec.retrieval.reranker.model",
    ),
    Invalid("reranker-timeout-5", RAGD, {"spec.retrieval.reranker.timeoutMs": 5}, "spec.retrieval.reranker.timeoutMs"),
    # store
    Invalid(
        "read-only-dsn-key-traversal",
        RAGD,
        {"spec.store.readOnlyDsnSecretRef": {"name": "pg-ro", "key": "../dsn"}},
        "spec.store.readOnlyDsnSecretRef.key",
    ),
    Invalid(
        "read-only-dsn-without-name",
        RAGD,
        {"spec.store.readOnlyDsnSecretRef": {"key": "dsn"}},
        "spec.store.readOnlyDsnSecretRef.name",
    ),
    # generation
    Invalid(
        "anthropic-without-key", RAGD, {"spec.generation.apiKeySecretRef": DELETE}, "spec.generation.apiKeySecretRef"
    ),
    Invalid("generation-provider", RAGD, {"spec.generation.provider": "openai"}, "spec.generation.provider"),
    Invalid("max-tokens-0", RAGD, {"spec.generation.maxTokens": 0}, "spec.generation.maxTokens"),
    Invalid("generation-model-257", RAGD, {"spec.generation.model": "m" * 257}, "spec.generation.model"),
    Invalid("generation-model-tab", RAGD, {"spec.generation.model": "claude\tx"}, "spec.generation.model"),
    Invalid("generation-model-c1-control", RAGD, {"spec.generation.model": "claude\u0085x"}, "spec.generation.model"),
    Invalid(
        "anthropic-key-traversal",
        RAGD,
        {"spec.generation.apiKeySecretRef.key": "../api-key"},
        "spec.generation.apiKeySecretRef.key",
    ),
    # limits and cache
    Invalid("max-query-chars-0", RAGD, {"spec.limits.maxQueryChars": 0}, "spec.limits.maxQueryChars"),
    Invalid(
        "rate-as-string",
        RAGD,
        {"spec.limits.requestsPerMinutePerClient": "100"},
        "spec.limits.requestsPerMinutePerClient",
    ),
    Invalid("retrieval-timeout-1ms", RAGD, {"spec.limits.retrievalTimeoutMs": 1}, "spec.limits.retrievalTimeoutMs"),
    Invalid("redis-without-ref", RAGD, {"spec.cache.backend": "redis"}, "spec.cache.redisUrlSecretRef"),
    Invalid("cache-backend", RAGD, {"spec.cache.backend": "memcached"}, "spec.cache.backend"),
    Invalid("cache-ttl-negative", RAGD, {"spec.cache.ttlSeconds": -1}, "spec.cache.ttlSeconds"),
    Invalid(
        "redis-key-traversal",
        RAGD,
        {"spec.cache": {"backend": "redis", "redisUrlSecretRef": {"name": "redis", "key": "../url"}}},
        "spec.cache.redisUrlSecretRef.key",
    ),
    # durations
    Invalid("retention-30s", RAGD, {"spec.jobs.retention": "30s"}, "spec.jobs.retention"),
    Invalid("retention-absurd", RAGD, {"spec.jobs.retention": "99999999999h"}, "spec.jobs.retention"),
    Invalid("jobs-concurrency-negative", RAGD, {"spec.jobs.concurrency": -1}, "spec.jobs.concurrency"),
    Invalid("slo-window-0s", RAGD, {"spec.slo.window": "0s"}, "spec.slo.window"),
    Invalid(
        "slo-window-500ms", RAGD, {"spec.slo.window": "500ms", "spec.slo.checkInterval": "500ms"}, "spec.slo.window"
    ),
    Invalid("slo-window-words", RAGD, {"spec.slo.window": "5 minutes"}, "spec.slo.window"),
    Invalid("slo-window-days", RAGD, {"spec.slo.window": "7d"}, "spec.slo.window"),
    Invalid("slo-window-negative", RAGD, {"spec.slo.window": "-5m"}, "spec.slo.window"),
    Invalid("slo-window-overflow", RAGD, {"spec.slo.window": "9999999999999h"}, "spec.slo.window"),
    Invalid("slo-window-units-reversed", RAGD, {"spec.slo.window": "30s5m"}, "spec.slo.window"),
    Invalid("slo-window-over-a-year", RAGD, {"spec.slo.window": "8761h"}, "spec.slo.window"),
    Invalid("slo-window-as-number", RAGD, {"spec.slo.window": 300}, "spec.slo.window"),
    Invalid("slo-interval-0s", RAGD, {"spec.slo.checkInterval": "0s"}, "spec.slo.checkInterval"),
    Invalid("slo-interval-above-window", RAGD, {"spec.slo.checkInterval": "10m"}, "spec.slo.checkInterval"),
    Invalid("slo-error-rate-2", RAGD, {"spec.slo.maxErrorRate": 2}, "spec.slo.maxErrorRate"),
    # monitoring URL
    Invalid("prometheus-no-scheme", RAGD, _prometheus("prometheus:9090"), PROMETHEUS_FIELD),
    Invalid("prometheus-metadata", RAGD, _prometheus("http://169.254.169.254:9090"), PROMETHEUS_FIELD),
    Invalid("prometheus-link-local-v6", RAGD, _prometheus("http://[fe80::a:1]:9090"), PROMETHEUS_FIELD),
    Invalid("prometheus-octal-ip", RAGD, _prometheus("http://010.0.0.1:9090"), PROMETHEUS_FIELD),
    Invalid("prometheus-space", RAGD, _prometheus("http://prometheus .monitoring:9090"), PROMETHEUS_FIELD),
    Invalid(
        "otlp-metadata", RAGD, {"spec.tracing.otlpEndpoint": "http://169.254.169.254:4318"}, "spec.tracing.otlpEndpoint"
    ),
    Invalid("otlp-hex-ip", RAGD, {"spec.tracing.otlpEndpoint": "http://0xa9fea9fe:4318"}, "spec.tracing.otlpEndpoint"),
    Invalid("otlp-no-scheme", RAGD, {"spec.tracing.otlpEndpoint": "collector:4318"}, "spec.tracing.otlpEndpoint"),
    Invalid("tracing-ratio-above-1", RAGD, {"spec.tracing.samplingRatio": 1.5}, "spec.tracing.samplingRatio"),
    Invalid("prometheus-port-6-digits", RAGD, _prometheus("http://prometheus:909090"), PROMETHEUS_FIELD),
    Invalid("prometheus-credentials", RAGD, _prometheus("http://admin:admin@prometheus:9090"), PROMETHEUS_FIELD),
    # progressive delivery: rollout strategies, steps, analysis limits, probes
    Invalid("canary-weight-101", RAGD, _canary([{"setWeight": 101}]), f"{STEPS}[0].setWeight"),
    Invalid("canary-weight-negative", RAGD, _canary([{"setWeight": -5}]), f"{STEPS}[0].setWeight"),
    Invalid("canary-weight-as-string", RAGD, _canary([{"setWeight": "10"}]), f"{STEPS}[0].setWeight"),
    Invalid("canary-weight-fraction", RAGD, _canary([{"setWeight": 10.5}]), f"{STEPS}[0].setWeight"),
    Invalid("canary-no-steps", RAGD, _canary([]), STEPS),
    Invalid("canary-steps-missing", RAGD, {"spec.rollout.strategy": {"canary": {}}}, STEPS),
    Invalid("canary-51-steps", RAGD, _canary([{"setWeight": 1}] * 51), STEPS),
    Invalid("canary-step-without-kind", RAGD, _canary([{"setWeight": 10}, {}]), f"{STEPS}[1]"),
    Invalid("canary-step-two-kinds", RAGD, _canary([{"setWeight": 10, "pause": {}}]), f"{STEPS}[0]"),
    Invalid("canary-step-typo", RAGD, _canary([{"setWeigth": 10}]), f"{STEPS}[0].setWeigth"),
    Invalid("canary-pause-over-timeout", RAGD, _canary([{"pause": {"duration": "2h"}}], timeout="1h"), STEPS),
    Invalid("canary-analysis-over-timeout", RAGD, _canary([{"analysis": {"duration": "90m"}}]), STEPS),
    Invalid("canary-pause-0s", RAGD, _canary([{"pause": {"duration": "0s"}}]), f"{STEPS}[0].pause.duration"),
    Invalid("canary-pause-words", RAGD, _canary([{"pause": {"duration": "soon"}}]), f"{STEPS}[0].pause.duration"),
    Invalid("canary-analysis-0s", RAGD, _canary([{"analysis": {"duration": "0s"}}]), f"{STEPS}[0].analysis.duration"),
    Invalid("canary-analysis-no-duration", RAGD, _canary([{"analysis": {}}]), f"{STEPS}[0].analysis.duration"),
    Invalid("canary-shadow-150", RAGD, _canary([{"shadow": {"percent": 150}}]), f"{STEPS}[0].shadow.percent"),
    Invalid("canary-shadow-negative", RAGD, _canary([{"shadow": {"percent": -1}}]), f"{STEPS}[0].shadow.percent"),
    Invalid("canary-timeout-30s", RAGD, _canary([{"setWeight": 10}], timeout="30s"), f"{CANARY}.timeout"),
    Invalid(
        "canary-analysis-interval-0s",
        RAGD,
        _canary([{"setWeight": 10}], analysis={"interval": "0s"}),
        f"{CANARY}.analysis.interval",
    ),
    Invalid(
        "canary-analysis-window-2d",
        RAGD,
        _canary([{"setWeight": 10}], analysis={"window": "48h"}),
        f"{CANARY}.analysis.window",
    ),
    Invalid(
        "canary-overlap-floor-1.5",
        RAGD,
        _canary([{"setWeight": 10}], analysis={"minShadowOverlap": 1.5}),
        f"{CANARY}.analysis.minShadowOverlap",
    ),
    Invalid(
        "canary-latency-ratio-below-1",
        RAGD,
        _canary([{"setWeight": 10}], analysis={"maxP95LatencyRatio": 0.5}),
        f"{CANARY}.analysis.maxP95LatencyRatio",
    ),
    Invalid(
        "canary-skip-unknown-check",
        RAGD,
        _canary([{"setWeight": 10}], analysis={"skip": ["recall"]}),
        f"{CANARY}.analysis.skip[0]",
    ),
    Invalid(
        "canary-skip-twice",
        RAGD,
        _canary([{"setWeight": 10}], analysis={"skip": ["errorRate", "errorRate"]}),
        f"{CANARY}.analysis.skip[1]",
        python=False,  # a list-type set is the apiserver's: pydantic keeps duplicates in a list
    ),
    Invalid(
        "canary-overlap-measure",
        RAGD,
        _canary([{"setWeight": 10}], analysis={"overlapMeasure": "cosine"}),
        f"{CANARY}.analysis.overlapMeasure",
    ),
    Invalid(
        "canary-probes-negative",
        RAGD,
        _canary([{"setWeight": 10}], probes={"perMinute": -1}),
        f"{CANARY}.probes.perMinute",
    ),
    Invalid(
        "canary-probes-too-fast",
        RAGD,
        _canary([{"setWeight": 10}], probes={"perMinute": 6001}),
        f"{CANARY}.probes.perMinute",
    ),
    Invalid(
        "canary-recorded-queries-traversal",
        RAGD,
        _canary([{"setWeight": 10}], probes={"recordedQueries": {"name": "queries", "key": "../x"}}),
        f"{CANARY}.probes.recordedQueries.key",
    ),
    Invalid(
        "canary-analysis-without-prometheus",
        RAGD,
        {**_canary([{"analysis": {"duration": "5m"}}]), "spec.monitoring": DELETE},
        "spec.monitoring.prometheusUrl",
    ),
    Invalid(
        "shadow-without-prometheus",
        RAGD,
        {"spec.rollout.strategy": {"shadow": {}}, "spec.monitoring": DELETE},
        "spec.monitoring.prometheusUrl",
    ),
    Invalid(
        "two-strategies",
        RAGD,
        {"spec.rollout.strategy": {"blueGreen": {}, "canary": {"steps": [{"setWeight": 10}]}}},
        "spec.rollout.strategy",
    ),
    Invalid(
        "shadow-percent-100.5", RAGD, {"spec.rollout.strategy": {"shadow": {"percent": 100.5}}}, f"{SHADOW}.percent"
    ),
    Invalid(
        "shadow-longer-than-timeout",
        RAGD,
        {"spec.rollout.strategy": {"shadow": {"duration": "2h", "timeout": "1h"}}},
        f"{SHADOW}.duration",
    ),
    Invalid("shadow-duration-0s", RAGD, {STRATEGY: {"shadow": {"duration": "0s"}}}, f"{SHADOW}.duration"),
    Invalid(
        "shadow-timeout-30s", RAGD, {STRATEGY: {"shadow": {"duration": "10s", "timeout": "30s"}}}, f"{SHADOW}.timeout"
    ),
    Invalid(
        "shadow-analysis-interval-2h",
        RAGD,
        {STRATEGY: {"shadow": {"analysis": {"interval": "2h"}}}},
        f"{SHADOW}.analysis.interval",
    ),
    Invalid(
        "shadow-analysis-window-0s",
        RAGD,
        {STRATEGY: {"shadow": {"analysis": {"window": "0s"}}}},
        f"{SHADOW}.analysis.window",
    ),
    Invalid("strategy-unknown", RAGD, {"spec.rollout.strategy": {"linear": {}}}, "spec.rollout.strategy.linear"),
    # unknown fields, nesting, envelope
    Invalid("unknown-runtime-typo", RAGD, {"spec.runtime.replica": 3}, "spec.runtime.replica"),
    Invalid("unknown-deep", RAGD, {"spec.runtime.extra": Deep(500)}, "spec.runtime.extra"),
    Invalid("object-for-int", RAGD, {"spec.runtime.replicas": {"value": 2}}, "spec.runtime.replicas"),
    Invalid("spec-missing-ragd", RAGD, {"spec": DELETE}, "spec", python=False),
    Invalid("metadata-name-too-long", RAGD, {"metadata.name": "a" * 254}, "metadata.name", python=False),
]

# ---- valid edge cases ---------------------------------------------------------------------------------

VALID: list[Valid] = [
    Valid("kb-name-63", KBV, {"spec.knowledgeBase": "k" * 63, "metadata.name": LONG_NAME}),
    Valid("sources-100", KBV, {"spec.sources": SOURCES_100}),
    Valid(
        "configmap-keys-edge",
        KBV,
        {
            "spec.sources[0].configMap.keys": [
                ".hidden.md",
                "a..b.md",
                "-_.x",
                "k" * 253,
                *(f"{i}.md" for i in range(996)),
            ]
        },
    ),
    Valid(
        "pvc-paths-and-globs",
        KBV,
        {
            "spec.sources[1]": {
                "pvc": {
                    "claimName": "corpus",
                    "path": "/docs/./current/" + "d" * 1000,
                    "include": [
                        "**/*.md",
                        "a/**/b?.txt",
                        "[a-z]*.html",
                        ".well-known/*.json",
                        "x" * 256,
                        *(["*.txt"] * 59),
                    ],
                }
            }
        },
    ),
    Valid("pvc-root-path", KBV, {"spec.sources[1]": {"pvc": {"claimName": "c", "path": "/", "include": ["*"]}}}),
    Valid(
        "urls-edge",
        KBV,
        {
            "spec.sources": [
                {"url": "http://[2001:db8::1]:8080/docs/a.md"},
                {"url": "https://example.com./a?b=c&d=%20#frag"},
                {"url": "http://10.0.0.1:8080/docs.md"},
                {"url": "http://my_service.docs.svc.cluster.local/x.md"},
                {"url": "https://a.example/" + "x" * 2030},
                {"url": "http://169.254.20.10:8080/node-local.md", "allowLinkLocal": True},
                {"url": "http://metadata.example.com/not-the-metadata-server.md"},
                {"url": "http://255.255.255.255/x"},
            ]
        },
    ),
    Valid("chunking-minimum", KBV, {"spec.chunking": {"strategy": "fixed", "size": 32, "overlap": 31}}),
    Valid("chunking-maximum", KBV, {"spec.chunking": {"strategy": "recursive", "size": 8192, "overlap": 4096}}),
    Valid(
        "embedding-unicode-and-maxima",
        KBV,
        {
            "spec.embedding": {
                "provider": "openai",
                "model": "模型-" + "é" * 200 + EMOJI_256[:53],
                "endpoint": "https://embeddings.example.com/v1",
                "dimensions": 2000,
                "batchSize": 2048,
                "apiKeySecretRef": {"name": "k" * 253, "key": "." + "k" * 252},
            }
        },
    ),
    Valid(
        "embedding-link-local-allowed",
        KBV,
        {
            "spec.embedding": {
                "provider": "openai",
                "model": "m",
                "endpoint": "http://[fd00:ec2::254]/v1",
                "allowLinkLocal": True,
            }
        },
    ),
    Valid("index-minimum", KBV, {"spec.index": {"m": 2, "efConstruction": 4, "distance": "l2"}}),
    Valid("index-maximum", KBV, {"spec.index": {"m": 100, "efConstruction": 1000, "distance": "innerProduct"}}),
    Valid(
        "gate-thresholds-bounds",
        KBV,
        {
            "spec.goldenSet": {
                "configMapRef": {"name": "g", "key": "c"},
                "k": 100,
                "thresholds": {"precisionAtK": 0, "recallAtK": 1, "mrr": 0, "ndcgAtK": 1, "answerPassRate": 1},
            }
        },
    ),
    Valid("metadata-labels-edge", KBV, {"metadata.labels": {"example.com/team": "a" * 63, "empty": ""}}),
    Valid(
        "image-forms",
        RAGD,
        {"spec.runtime.image": f"localhost:5000/team/sub/ragops_runtime__x:v1.2.3-rc.1@{DIGEST}"},
    ),
    Valid("image-plain-name", RAGD, {"spec.runtime.image": "ragops"}),
    Valid("image-by-digest", RAGD, {"spec.runtime.image": f"registry.example.com/acme/ragops@{DIGEST}"}),
    Valid("replicas-bounds", RAGD, {"spec.runtime.replicas": 0, "spec.runtime.autoscaling": DELETE}),
    Valid(
        "autoscaling-maxima",
        RAGD,
        {
            "spec.runtime.replicas": 1000,
            "spec.runtime.autoscaling": {"minReplicas": 1000, "maxReplicas": 1000, "targetCPUUtilization": 100},
        },
    ),
    Valid(
        "resources-equal-in-other-forms",
        RAGD,
        {
            "spec.runtime.resources": {
                "requests": {"cpu": "0.5", "memory": "1e9", "ephemeral-storage": 0},
                "limits": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Ki"},
            }
        },
    ),
    Valid(
        "resources-extended-and-hugepages",
        RAGD,
        {
            "spec.runtime.resources": {
                "requests": {"cpu": 2, "memory": "2Gi", "hugepages-2Mi": "128Mi", "example.com/fpga": 1},
                "limits": {"cpu": "2000m", "memory": "2Gi", "hugepages-2Mi": "128Mi", "example.com/fpga": "1"},
            }
        },
    ),
    Valid(
        "resources-16-names",
        RAGD,
        {
            "spec.runtime.resources": {
                "requests": {"cpu": "100m", "memory": "128Mi", **{f"example.com/r{i}": 1 for i in range(14)}},
                "limits": {"memory": "128Mi", **{f"example.com/r{i}": 1 for i in range(14)}, "cpu": 1},
            }
        },
    ),
    Valid(
        "retrieval-and-reranker-bounds",
        RAGD,
        {
            "spec.retrieval": {
                "topK": 200,
                "rerankTopK": 50,
                "hybrid": False,
                "reranker": {
                    "provider": "http",
                    "endpoint": "http://reranker.ml.svc:8080/rerank",
                    "model": "bge-reranker-v2-m3 (🦙 edition)",
                    "timeoutMs": 60000,
                },
            }
        },
    ),
    Valid(
        "reranker-link-local-allowed",
        RAGD,
        {
            "spec.retrieval.reranker": {
                "provider": "http",
                "endpoint": "http://metadata.google.internal/rerank",
                "allowLinkLocal": True,
            }
        },
    ),
    Valid("generation-model-256-emoji", RAGD, {"spec.generation.model": EMOJI_256, "spec.generation.maxTokens": 8192}),
    Valid(
        "limits-maxima",
        RAGD,
        {
            "spec.limits": {
                "requestsPerMinutePerClient": 1_000_000,
                "maxQueryChars": 100_000,
                "retrievalTimeoutMs": 60_000,
                "maxConcurrentRequests": 10_000,
            }
        },
    ),
    Valid("slo-one-second", RAGD, {"spec.slo.window": "1s", "spec.slo.checkInterval": "1s"}),
    Valid("slo-a-year", RAGD, {"spec.slo.window": "8760h", "spec.slo.checkInterval": "1h30m15s500ms"}),
    Valid("slo-fractions", RAGD, {"spec.slo.window": "1.5h", "spec.slo.checkInterval": "0.5m"}),
    Valid(
        "jobs-retention-bounds", RAGD, {"spec.jobs": {"retention": "1m", "concurrency": 0, "maxQueriesPerJob": 10_000}}
    ),
    Valid(
        "cache-redis-zero-ttl",
        RAGD,
        {
            "spec.cache": {
                "backend": "redis",
                "ttlSeconds": 0,
                "maxEntries": 0,
                "redisUrlSecretRef": {"name": "redis", "key": "url"},
            }
        },
    ),
    Valid("prometheus-ipv6", RAGD, {"spec.monitoring.prometheusUrl": "http://[2001:db8::9]:9090"}),
    Valid(
        "prometheus-link-local-allowed",
        RAGD,
        {"spec.monitoring": {"prometheusUrl": "http://169.254.20.10:9090", "allowLinkLocal": True}},
    ),
    Valid(
        "tracing-and-openai-keys",
        RAGD,
        {
            "spec.tracing": {"otlpEndpoint": "http://otel-collector.observability:4318", "samplingRatio": 0},
            "spec.openai": {"apiKeysSecretRef": {"name": "rag-clients", "key": "keys"}},
        },
    ),
    Valid("ragd-name-253", RAGD, {"metadata.name": LONG_NAME}),
    Valid("strategy-empty-is-blue-green", RAGD, {"spec.rollout.strategy": {}}),
    Valid(
        "canary-50-steps-edges",
        RAGD,
        _canary(
            EDGE_STEPS,
            timeout="1h",
            analysis={
                "skip": [
                    "p95LatencyMs",
                    "errorRate",
                    "satisfaction",
                    "costPerQueryUsd",
                    "shadowOverlap",
                    "goldenRecall",
                ],
                "maxCostRatio": 100,
                "minShadowOverlap": 0,
                "maxInconclusive": 0,
            },
            probes={"perMinute": 0, "goldenSet": False, "recordedQueries": {"name": "q", "key": "queries.txt"}},
        ),
    ),
    Valid("canary-without-analysis-or-prometheus", RAGD, {**_canary([{"setWeight": 50}]), "spec.monitoring": DELETE}),
    Valid("shadow-defaults", RAGD, {"spec.rollout.strategy": {"shadow": {}}}),
]
