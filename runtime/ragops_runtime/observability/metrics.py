"""The runtime's Prometheus metrics: one registry per app, every series labelled with its deployment.

`RuntimeMetrics` owns the collectors and turns domain events (a query answered, a cache hit, a
rollout's version switch) into samples; `render` produces the body of GET /metrics. Each instance
has its own `CollectorRegistry` because tests build many apps in one process and the global
registry refuses a second collector of the same name.

The `namespace`, `deployment` and `pod` labels are on every series, so the SLO rules that judge a
rollout can tell RagDeployments apart without relabelling in the scrape config. The series of a
query also carry `kb_version` (the version that answered) and `role` (`stable`, `canary`,
`shadow`, `probe`): a progressive rollout compares candidate with stable on exactly these
(docs/design/progressive-delivery.md lists them). Sums over all labels still read the whole
deployment, as the SLO queries do.

Label values must come from closed sets chosen by the code (modes, statuses, reasons), never from
a request: every distinct value is a new time series. Stages, token directions and cost services
are checked here; this module must not log, read the clock or serve HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

IDENTITY_LABELS = ("namespace", "deployment", "pod")
STAGES = ("embed", "retrieve", "rerank", "generate")
QUERY_OUTCOMES = (
    ("generated", "ok"),
    ("generated", "degraded"),
    ("retrieval_only", "ok"),
    ("retrieval_only", "degraded"),
    ("cached", "ok"),
    ("none", "error"),
)
"""The (mode, status) pairs the query service records (see service.py)."""
TOKEN_DIRECTIONS = ("input", "output")
COST_SERVICES = ("generation", "embedding", "rerank")
CACHE_OPERATIONS = ("get", "put", "decode")
"""Calls to a shared answer cache that can fail (see protection/redis_cache.py)."""

QUERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
"""From a cache hit (a few ms) to a slow generation (tens of seconds); +Inf catches the rest."""

STAGE_BUCKETS = QUERY_BUCKETS
"""Stages share the query buckets, so a stage's share of the whole can be read bucket by bucket."""

FEEDBACK_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

ROLES = ("stable", "canary", "shadow", "probe")
"""Who a query was for: users on the stable or the candidate version, a shadow copy, a golden probe."""
COMPARISON_ROLES = ("shadow", "probe")
"""Where stable and candidate are compared on the same query."""
OVERLAP_LEVELS = ("chunk", "document")
OVERLAP_MEASURES = ("jaccard", "rbo")
OVERLAP_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SHADOW_OUTCOMES = ("ok", "empty", "error", "dropped")
"""A shadow retrieval found chunks, found none, failed, or was not run because shadows were saturated."""

REPLICA_READ_OUTCOMES = ("replica", "lag", "unavailable", "conflict")
"""Where the chunks of a query were read with a replica configured: on the replica, or on the primary
because the replica had not replayed the version yet, was unreachable, or cancelled the read (a
recovery conflict)."""

JOB_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
"""A job lasts from one cached answer (under a second) to a large batch behind a busy queue (hours)."""
JOB_QUEUE_STATES = ("queued", "running")
JOB_ITEM_OUTCOMES = ("done", "failed")
JOB_RETRY_REASONS = ("transient", "lease_expired")
"""Why an item is attempted again: a transient failure, or its worker was lost while holding it."""


@dataclass(frozen=True)
class DeploymentIdentity:
    """Which RagDeployment and pod the samples come from; constant labels on every series."""

    namespace: str
    deployment: str
    pod: str

    def values(self) -> tuple[str, str, str]:
        return (self.namespace, self.deployment, self.pod)


class RuntimeMetrics:
    """The collectors of one runtime, registered in `registry` (a fresh one unless given)."""

    def __init__(self, identity: DeploymentIdentity, registry: CollectorRegistry | None = None) -> None:
        self.identity = identity
        self.registry = registry if registry is not None else CollectorRegistry()
        ids = identity.values()
        labels = list(IDENTITY_LABELS)

        self._queries = Counter(
            "ragops_queries_total",
            "Queries answered by the runtime, by retrieval mode and outcome, version and role.",
            [*labels, "mode", "status", "kb_version", "role"],
            registry=self.registry,
        )
        self._query_duration = Histogram(
            "ragops_query_duration_seconds",
            "Time from receiving a query to sending its answer, in seconds, by version and role.",
            [*labels, "kb_version", "role"],
            buckets=QUERY_BUCKETS,
            registry=self.registry,
        )
        self._stage_duration = Histogram(
            "ragops_stage_duration_seconds",
            "Time spent in one stage of answering a query (embed, retrieve, rerank, generate), in seconds.",
            [*labels, "stage", "kb_version", "role"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self._cache_hits = Counter(
            "ragops_cache_hits_total",
            "Queries answered from the answer cache.",
            labels,
            registry=self.registry,
        ).labels(*ids)
        self._cache_misses = Counter(
            "ragops_cache_misses_total",
            "Queries looked up in the answer cache and not found there.",
            labels,
            registry=self.registry,
        ).labels(*ids)
        cache_errors = Counter(
            "ragops_cache_errors_total",
            "Failed calls to the shared answer cache, by operation; each was served as a miss or not stored.",
            [*labels, "operation"],
            registry=self.registry,
        )
        self._cache_errors = {operation: cache_errors.labels(*ids, operation) for operation in CACHE_OPERATIONS}
        self._tokens = Counter(
            "ragops_llm_tokens_total",
            "Tokens sent to (input) and received from (output) the generation model.",
            [*labels, "direction", "kb_version", "role"],
            registry=self.registry,
        )
        self._cost = Counter(
            "ragops_cost_usd_total",
            "Estimated spend on paid model APIs, in US dollars, by service.",
            [*labels, "service", "kb_version", "role"],
            registry=self.registry,
        )
        self._feedback = Histogram(
            "ragops_feedback_score",
            "Scores users gave to answers, from 0 (useless) to 1 (perfect), by the version and role that answered.",
            [*labels, "kb_version", "role"],
            buckets=FEEDBACK_BUCKETS,
            registry=self.registry,
        )
        # Read from the answer log at each scrape (app.py), so every replica reports the whole
        # deployment's raters: aggregate with max, not sum. Absent while the database is unreachable.
        self._raters = Gauge(
            "ragops_feedback_raters",
            "Distinct raters (trusted client identities) whose ratings of this deployment's answers arrived in "
            "the last RAGOPS_FEEDBACK_WINDOW_SECONDS, by the version and role that answered.",
            [*labels, "kb_version", "role"],
            registry=self.registry,
        )
        self._retrieval_empty = Counter(
            "ragops_retrieval_empty_total",
            "Queries for which retrieval found no chunk at all.",
            [*labels, "kb_version", "role"],
            registry=self.registry,
        )
        self._overlap = Histogram(
            "ragops_shadow_overlap",
            "Agreement of the candidate's top-k with stable's on the same query (1 = the same), "
            "by level (chunk, document) and measure (jaccard, rbo); kb_version is the candidate.",
            [*labels, "kb_version", "role", "level", "measure"],
            buckets=OVERLAP_BUCKETS,
            registry=self.registry,
        )
        self._shadow_queries = Counter(
            "ragops_shadow_queries_total",
            "Shadow retrievals on the candidate (kb_version), by outcome: ok, empty, error, or dropped when saturated.",
            [*labels, "kb_version", "outcome"],
            registry=self.registry,
        )
        self._probe_hits = Counter(
            "ragops_probe_hits_total",
            "Golden probes sent to a version, by whether its top-k held one of the probe's relevant documents.",
            [*labels, "kb_version", "hit"],
            registry=self.registry,
        )
        # Series created per version, so a version that left the split can be forgotten whole.
        self._version_series: dict[str, set[tuple[Any, tuple[str, ...]]]] = {}
        self._rate_limited = Counter(
            "ragops_rate_limited_total",
            "Requests refused because their client exceeded its rate limit.",
            labels,
            registry=self.registry,
        ).labels(*ids)
        self._saturated = Counter(
            "ragops_saturated_total",
            "Requests refused because every concurrency slot was in use.",
            labels,
            registry=self.registry,
        ).labels(*ids)
        self._degraded = Counter(
            "ragops_degraded_total",
            "Answers served with a degraded pipeline, by the reason a stage was skipped or replaced.",
            [*labels, "reason", "kb_version", "role"],
            registry=self.registry,
        )
        # An Info holds one label set per child: setting a new version replaces the old series, so
        # exactly one version of each knowledge base reads 1. Exposed as ragops_active_knowledge_base_info,
        # not "..._kb_info": promtool's lint reads "kb" as kilobytes and rejects the name.
        self._active_kb = Info(
            "ragops_active_knowledge_base",
            "The knowledge-base version this runtime serves; the series with value 1 names it.",
            [*labels, "knowledge_base"],
            registry=self.registry,
        )
        self._ids = ids

        # Reads from a streaming replica (replica.py); series exist only where one is configured.
        self._replica_reads_family = Counter(
            "ragops_replica_reads_total",
            "Chunk reads by outcome: read on the replica, or on the primary because the replica lagged behind "
            "the version (lag), was unreachable (unavailable) or cancelled the read (conflict).",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self._replica_up_family = Gauge(
            "ragops_replica_up",
            "1 while the read-only replica takes this replica's chunk reads, 0 while they go to the primary.",
            labels,
            registry=self.registry,
        )
        self._replica_reads: dict[str, Any] = {}
        self._replica_up: Any = None

        # The job queue (jobs.py): depth is refreshed from the database by each replica's worker, so
        # every replica reports the whole queue of its deployment (aggregate with max, not sum).
        depth = Gauge(
            "ragops_jobs_queue_depth",
            "Unfinished job items of this deployment's queue, by state, as last read from the database.",
            [*labels, "state"],
            registry=self.registry,
        )
        self._job_queue_depth = {state: depth.labels(*ids, state) for state in JOB_QUEUE_STATES}
        self._job_duration = Histogram(
            "ragops_job_duration_seconds",
            "Time from submitting a job to its last item finishing, in seconds; observed by the finishing replica.",
            labels,
            buckets=JOB_BUCKETS,
            registry=self.registry,
        ).labels(*ids)
        items = Counter(
            "ragops_job_items_total",
            "Job items finished by this replica, by outcome.",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self._job_items = {outcome: items.labels(*ids, outcome) for outcome in JOB_ITEM_OUTCOMES}
        retries = Counter(
            "ragops_job_item_retries_total",
            "Job items attempted again, by reason: a transient failure, or a lost worker's expired lease.",
            [*labels, "reason"],
            registry=self.registry,
        )
        self._job_retries = {reason: retries.labels(*ids, reason) for reason in JOB_RETRY_REASONS}

    def _child(self, collector: Any, kb_version: str, *values: str) -> Any:
        """The child of `collector` for this pod, `values` and `kb_version` (values end with the version's labels)."""
        key = (*self._ids, *values)
        self._version_series.setdefault(kb_version, set()).add((collector, key))
        return collector.labels(*key)

    def observe_query(
        self, *, mode: str, status: str, seconds: float, stages: Mapping[str, float], kb_version: str, role: str
    ) -> None:
        """One answered query: its outcome, its total duration and the duration of each stage it ran."""
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            # Checked before anything is recorded, so a bad call leaves no partial sample behind.
            raise ValueError(f"unknown stages {unknown}; expected some of {list(STAGES)}")
        _check_role(role)
        self._child(self._queries, kb_version, mode, status, kb_version, role).inc()
        self._child(self._query_duration, kb_version, kb_version, role).observe(seconds)
        for stage, stage_seconds in stages.items():
            self._child(self._stage_duration, kb_version, stage, kb_version, role).observe(stage_seconds)

    def prepare_split(self, stable: str, canary: str | None, *, probes: bool) -> None:
        """Creates the series of the versions in a split at zero, for each role they can be seen in.

        Prometheus' increase() cannot see the increment that creates a series: without this, a
        candidate's first error, rating or empty retrieval would be invisible to the analysis.
        """
        self._prepare(stable, ("stable", "probe") if probes else ("stable",))
        if canary is not None:
            self._prepare(canary, ("canary", "shadow", "probe") if probes else ("canary", "shadow"))
            for role in ("shadow", "probe") if probes else ("shadow",):
                for level in OVERLAP_LEVELS:
                    for measure in OVERLAP_MEASURES:
                        self._child(self._overlap, canary, canary, role, level, measure)
            for outcome in SHADOW_OUTCOMES:
                self._child(self._shadow_queries, canary, canary, outcome)

    def _prepare(self, kb_version: str, roles: Iterable[str]) -> None:
        for role in roles:
            for mode, status in QUERY_OUTCOMES:
                self._child(self._queries, kb_version, mode, status, kb_version, role)
            self._child(self._query_duration, kb_version, kb_version, role)
            self._child(self._retrieval_empty, kb_version, kb_version, role)
            for stage in STAGES if role in ("stable", "canary") else ("embed", "retrieve"):
                self._child(self._stage_duration, kb_version, stage, kb_version, role)
            if role in ("stable", "canary"):
                self._child(self._feedback, kb_version, kb_version, role)
                for direction in TOKEN_DIRECTIONS:
                    self._child(self._tokens, kb_version, direction, kb_version, role)
                for service in COST_SERVICES:
                    self._child(self._cost, kb_version, service, kb_version, role)
            if role == "probe":
                for hit in ("true", "false"):
                    self._child(self._probe_hits, kb_version, kb_version, hit)

    def forget_version(self, kb_version: str) -> None:
        """Removes every series of a version no longer served, so a long-lived pod does not pile them up."""
        for collector, key in self._version_series.pop(kb_version, set()):
            collector.remove(*key)

    @property
    def versions(self) -> frozenset[str]:
        """The versions that have series here."""
        return frozenset(self._version_series)

    def cache_hit(self) -> None:
        self._cache_hits.inc()

    def cache_miss(self) -> None:
        self._cache_misses.inc()

    def cache_error(self, operation: str) -> None:
        if operation not in self._cache_errors:
            raise ValueError(f"unknown cache operation {operation!r}; expected one of {list(CACHE_OPERATIONS)}")
        self._cache_errors[operation].inc()

    def tokens(self, *, input_tokens: int, output_tokens: int, kb_version: str, role: str) -> None:
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError(f"token counts must not be negative, got {input_tokens} and {output_tokens}")
        _check_role(role)
        self._child(self._tokens, kb_version, "input", kb_version, role).inc(input_tokens)
        self._child(self._tokens, kb_version, "output", kb_version, role).inc(output_tokens)

    def cost(self, *, service: str, usd: float, kb_version: str, role: str) -> None:
        if service not in COST_SERVICES:
            raise ValueError(f"unknown cost service {service!r}; expected one of {list(COST_SERVICES)}")
        if not math.isfinite(usd) or usd < 0:
            raise ValueError(f"cost must be a finite amount not below 0, got {usd}")
        _check_role(role)
        self._child(self._cost, kb_version, service, kb_version, role).inc(usd)

    def feedback(self, score: float, *, kb_version: str, role: str) -> None:
        # The API validates the feedback body; this guards the histogram's 0..1 buckets against a caller bug.
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"feedback score must be between 0 and 1, got {score}")
        _check_role(role)
        self._child(self._feedback, kb_version, kb_version, role).observe(score)

    def set_raters(self, counts: Mapping[tuple[str, str], int] | None) -> None:
        """Distinct raters per (kb_version, role) in the feedback window; None when unknown (no series at all)."""
        self._raters.clear()
        for (kb_version, role), count in (counts or {}).items():
            _check_role(role)
            self._raters.labels(*self._ids, kb_version, role).set(count)

    def retrieval_empty(self, *, kb_version: str, role: str) -> None:
        _check_role(role)
        self._child(self._retrieval_empty, kb_version, kb_version, role).inc()

    def overlap(self, values: Mapping[tuple[str, str], float], *, kb_version: str, role: str) -> None:
        """One comparison of the candidate (`kb_version`) with stable: a value per (level, measure)."""
        if role not in COMPARISON_ROLES:
            raise ValueError(f"unknown comparison role {role!r}; expected one of {list(COMPARISON_ROLES)}")
        for (level, measure), value in values.items():
            if level not in OVERLAP_LEVELS or measure not in OVERLAP_MEASURES:
                raise ValueError(f"unknown overlap {level}/{measure}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"overlap must be between 0 and 1, got {value}")
        for (level, measure), value in values.items():
            self._child(self._overlap, kb_version, kb_version, role, level, measure).observe(value)

    def shadow_query(self, outcome: str, *, kb_version: str) -> None:
        if outcome not in SHADOW_OUTCOMES:
            raise ValueError(f"unknown shadow outcome {outcome!r}; expected one of {list(SHADOW_OUTCOMES)}")
        self._child(self._shadow_queries, kb_version, kb_version, outcome).inc()

    def probe_hit(self, hit: bool, *, kb_version: str) -> None:
        self._child(self._probe_hits, kb_version, kb_version, "true" if hit else "false").inc()

    def rate_limited(self) -> None:
        self._rate_limited.inc()

    def saturated(self) -> None:
        self._saturated.inc()

    def degraded(self, reason: str, *, kb_version: str, role: str) -> None:
        _check_role(role)
        self._child(self._degraded, kb_version, reason, kb_version, role).inc()

    def prepare_replica(self) -> None:
        """Creates the replica series at zero: a deployment that reads from a replica exports them all."""
        self._replica_reads = {
            outcome: self._replica_reads_family.labels(*self._ids, outcome) for outcome in REPLICA_READ_OUTCOMES
        }
        self._replica_up = self._replica_up_family.labels(*self._ids)

    def replica_read(self, outcome: str) -> None:
        if outcome not in REPLICA_READ_OUTCOMES:
            raise ValueError(f"unknown replica read outcome {outcome!r}; expected one of {list(REPLICA_READ_OUTCOMES)}")
        if not self._replica_reads:
            raise ValueError("no replica is configured: call prepare_replica first")
        self._replica_reads[outcome].inc()

    def set_replica_up(self, up: bool) -> None:
        if self._replica_up is None:
            raise ValueError("no replica is configured: call prepare_replica first")
        self._replica_up.set(1 if up else 0)

    def set_job_queue_depth(self, depth: Mapping[str, int]) -> None:
        """The unfinished items by state; a state missing from `depth` reads 0."""
        unknown = sorted(set(depth) - set(JOB_QUEUE_STATES))
        if unknown:
            raise ValueError(f"unknown job states {unknown}; expected some of {list(JOB_QUEUE_STATES)}")
        for state, gauge in self._job_queue_depth.items():
            gauge.set(depth.get(state, 0))

    def job_finished(self, seconds: float) -> None:
        self._job_duration.observe(seconds)

    def job_item_finished(self, outcome: str) -> None:
        if outcome not in self._job_items:
            raise ValueError(f"unknown job item outcome {outcome!r}; expected one of {list(JOB_ITEM_OUTCOMES)}")
        self._job_items[outcome].inc()

    def job_item_retried(self, reason: str) -> None:
        if reason not in self._job_retries:
            raise ValueError(f"unknown job retry reason {reason!r}; expected one of {list(JOB_RETRY_REASONS)}")
        self._job_retries[reason].inc()

    def set_active_version(self, knowledge_base: str, version: str) -> None:
        """Marks `version` as the one served for `knowledge_base`; the previous version's series disappears."""
        self._active_kb.labels(*self._ids, knowledge_base).info({"version": version})

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for GET /metrics.

        Prometheus text format 0.0.4: every Prometheus server reads it, and our names need none of the
        UTF-8 escaping that the newer formats negotiate.
        """
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


RATERS_READ_SECONDS = 10.0
"""How long a reading of the deployment's raters serves scrapes before the answer log is read again."""


class RatersReading:
    """The last count of the deployment's distinct raters read from the answer log, and when it was read.

    Every scrape of /metrics used to read the answer log (a join and a distinct count over the
    feedback window): each Prometheus server of an HA pair, each replica, every 15 s. A reading
    serves scrapes for `max_age` seconds; a rating this replica stores drops it, so the replica
    that took a rating shows it at the next scrape, and ratings taken by other replicas within `max_age`.
    """

    def __init__(self, max_age: float = RATERS_READ_SECONDS) -> None:
        self._max_age = max_age
        self._counts: dict[tuple[str, str], int] | None = None
        self._read_at = 0.0

    def fresh(self, now: float) -> dict[tuple[str, str], int] | None:
        """The last reading if it is younger than `max_age` (a copy), else None: read again."""
        if self._counts is None or now - self._read_at >= self._max_age:
            return None
        return dict(self._counts)

    def store(self, counts: Mapping[tuple[str, str], int], now: float) -> None:
        self._counts, self._read_at = dict(counts), now

    def drop(self) -> None:
        self._counts = None


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {list(ROLES)}")
