"""One reconcile pass per resource: observe (kube, store, Prometheus), plan (pure), apply, write status.

The handlers call these; everything that decides lives in `reconcile/`, everything that builds
manifests in `builders/`, every Kubernetes call in `kube.py`, every SQL in the runtime's store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from ragops_runtime.store import ActivationRefused, GateRequirement, KnowledgeStore, StoreError

from .api import KnowledgeBaseVersionSpec, RagDeploymentSpec, parse_duration
from .api.common import GROUP, VERSION, Condition, ConditionStatus, RuleViolation
from .api.conditions import KnowledgeBaseVersionCondition, RagDeploymentCondition, Reason
from .api.knowledgebaseversion import StoreSpec
from .api.ragdeployment import SloMeasurement
from .builders import (
    RUNTIME_HASH_LABEL,
    RuntimeContext,
    StoredTemplate,
    VersionContext,
    build_build_job,
    build_controller_revision,
    build_eval_job,
    build_runtime_children,
    child_name,
    runtime_template_hash,
    selector_labels,
)
from .kube import ChildRefused, Kube
from .prometheus import PrometheusClient
from .reconcile.knowledgebaseversion import (
    Action,
    Event,
    JobState,
    ObservedJob,
    StoredVersion,
    VersionObservation,
    plan_knowledge_base_version,
)
from .reconcile.progressive import ProgressivePlan, TrafficChange
from .reconcile.ragdeployment import (
    DesiredVersion,
    Revision,
    RollbackRequest,
    RolloutObservation,
    VersionReadiness,
    current_revision,
    kept_versions,
    last_known_good,
    plan_rollout,
    runtime_failure,
    stale_templates,
    version_deletion,
)
from .reconcile.slo import advance, bake_complete, decide_rollback, judge, state_from_measurement, to_measurement
from .reconcile.status import refusal_reported, set_condition
from .rollout import apply_traffic, plan_pass, previous_rollout, rollout_status
from .settings import OperatorSettings

log = logging.getLogger("ragops.operator")
API_VERSION = f"{GROUP}/{VERSION}"
SpecT = TypeVar("SpecT", KnowledgeBaseVersionSpec, RagDeploymentSpec)


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    events: tuple[Event, ...]
    retry: str | None = None
    """Why the pass could not finish (e.g. the store is unreachable): the handler retries soon."""


def _conditions(body: dict[str, Any]) -> list[Condition]:
    return [Condition.model_validate(c) for c in (body.get("status") or {}).get("conditions") or []]


def _with_condition(
    body: dict[str, Any], type: str, status: ConditionStatus, reason: str, message: str, generation: int, now: datetime
) -> dict[str, Any]:
    """The object's current status with one condition set: for passes that end early."""
    current = dict(body.get("status") or {})
    conditions = set_condition(
        _conditions(body),
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        now=now,
    )
    current["conditions"] = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]
    current["observedGeneration"] = generation
    return current


class SpecRefused(Exception):
    """The apiserver accepted the spec, but the operator cannot act on it; the message names the field.

    Raised wherever a pass finds it out (the spec's own model, another object it names, a child the
    apiserver refuses); `refused` turns it into the one status the object gets until its spec changes.
    """


def parse_spec(model: type[SpecT], body: Mapping[str, Any]) -> SpecT:
    """The object's spec as its model, or SpecRefused naming every invalid field.

    The apiserver's schema is generated from the same models, so this fails only where the cluster's
    CRD is older than the operator (Helm never upgrades CRDs) or was edited by hand.
    """
    try:
        return model.model_validate(body["spec"])
    except ValidationError as error:
        raise SpecRefused(_fields(error)) from None


def _fields(error: ValidationError) -> str:
    """`spec.<path>: <why>` per error; a cross-field rule's path goes down to the field it names."""
    named = []
    for e in error.errors():
        path, message = [str(part) for part in e["loc"]], e["msg"]
        violation = (e.get("ctx") or {}).get("error")
        if isinstance(violation, RuleViolation):
            path, message = [*path, *filter(None, violation.field.split("."))], violation.message
        named.append(f"spec.{'.'.join(path)}: {message}")
    return "; ".join(named)


def refused(body: Mapping[str, Any], message: str, ready_type: str, now: datetime) -> Outcome:
    """Ready (or Available)=False, reason InvalidSpec, phase Failed; the Event only the first time.

    Handlers do not run another pass for the same generation (see `refusal_reported`), but a restarted
    operator does once: the condition already there keeps that pass from posting the Event again.
    """
    generation = int(body["metadata"].get("generation", 1))
    previous = _conditions(dict(body))
    reported = refusal_reported(previous, ready_type, generation, message)
    conditions = set_condition(
        previous,
        type=ready_type,
        status="False",
        reason=Reason.INVALID_SPEC,
        message=message,
        observed_generation=generation,
        now=now,
    )
    status = {
        "observedGeneration": generation,
        "phase": "Failed",
        "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions],
    }
    return Outcome(status, () if reported else (Event("Warning", Reason.INVALID_SPEC, message),))


def invalid_spec(body: Mapping[str, Any], error: ValidationError, ready_type: str, now: datetime) -> Outcome:
    """`refused` for a spec its model rejects, naming the fields."""
    return refused(body, _fields(error), ready_type, now)


# ---- KnowledgeBaseVersion ---------------------------------------------------------------------------


def _job_state(job: dict[str, Any] | None) -> ObservedJob:
    """The Job's own verdict: Failed only once the Job is (backoffLimit spent, or podFailurePolicy)."""
    if job is None:
        return ObservedJob(JobState.MISSING)
    status = job.get("status") or {}
    failed = int(status.get("failed") or 0)
    spec = job.get("spec") or {}
    # An Indexed build Job retries each shard up to backoffLimitPerIndex (its backoffLimit defaults
    # to the largest int32): `failed` counts every shard's failures, so no one limit bounds it.
    limit = None if spec.get("backoffLimitPerIndex") is not None else spec.get("backoffLimit")
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return ObservedJob(JobState.SUCCEEDED, failed_attempts=failed, backoff_limit=limit)
        if condition.get("type") in ("Failed", "FailureTarget"):
            message = condition.get("message") or condition.get("reason") or ""
            return ObservedJob(JobState.FAILED, message, failed_attempts=failed, backoff_limit=limit)
    return ObservedJob(JobState.RUNNING, failed_attempts=failed, backoff_limit=limit)


class Stores:
    """One open store connection per DSN, reused by every pass and used by one pass at a time.

    Connecting (TLS, authentication, the schema check) costs far more than the one or two queries a
    pass makes; with hundreds of objects on one database, a connection per pass was the operator's
    main cost. A connection that fails is dropped, and the next pass connects again.
    """

    def __init__(self) -> None:
        self._open: dict[str, KnowledgeStore] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def use(self, dsn: str) -> AsyncIterator[KnowledgeStore]:
        # One pass at a time: activation is a transaction, and a shared connection would mix them.
        async with self._locks.setdefault(dsn, asyncio.Lock()):
            store = self._open.get(dsn)
            if store is None or store.connection.closed:
                store = self._open[dsn] = await KnowledgeStore.connect(dsn)
            try:
                yield store
            except ActivationRefused:
                raise  # a refusal, not a broken connection: the transaction rolled back, the connection stays
            except StoreError:
                del self._open[dsn]
                await store.close()
                raise

    async def close(self) -> None:
        for store in self._open.values():
            await store.close()
        self._open.clear()


@dataclass
class Observers:
    """What passes share between them: the store connections, and which namespaces serve ServiceMonitors."""

    stores: Stores = field(default_factory=Stores)
    service_monitors: dict[str, tuple[bool, float]] = field(default_factory=dict)
    """namespace -> (served, when asked, on the loop's clock)."""


async def store_dsn(kube: Kube, namespace: str, store: StoreSpec) -> str | None:
    ref = store.dsn_secret_ref
    return await kube.secret_value(namespace, ref.name, ref.key)


async def _refusing(pass_: Awaitable[Outcome], body: Mapping[str, Any], ready_type: str, now: datetime) -> Outcome:
    """The one place a pass that finds its spec unusable ends: in a condition, never a traceback loop."""
    try:
        return await pass_
    except (SpecRefused, ChildRefused) as error:
        return refused(body, str(error), ready_type, now)


async def reconcile_version(
    kube: Kube, observers: Observers, config: OperatorSettings, body: dict[str, Any], now: datetime
) -> Outcome:
    ready = KnowledgeBaseVersionCondition.READY
    return await _refusing(_version_pass(kube, observers, config, body, now), body, ready, now)


async def _version_pass(
    kube: Kube, observers: Observers, config: OperatorSettings, body: dict[str, Any], now: datetime
) -> Outcome:
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    spec = parse_spec(KnowledgeBaseVersionSpec, body)

    build = await kube.get("batch/v1", "Job", namespace, child_name(name, "build"))
    evaluation = await kube.get("batch/v1", "Job", namespace, child_name(name, "eval"))
    stored: StoredVersion | None = None
    dsn = await store_dsn(kube, namespace, spec.store)
    if dsn is not None:
        try:
            async with observers.stores.use(dsn) as store:
                record = await store.get_version(spec.knowledge_base, name)
                unmet = None
                if record is not None and record.gate_passed:
                    unmet = await store.unmet_requirement(record, gate_requirement(spec))
        except StoreError as error:
            # Without the store nothing can be verified: report it, start nothing, retry soon.
            message = f"the store is unreachable: {error}"
            status = _with_condition(
                body, KnowledgeBaseVersionCondition.READY, "False", Reason.STORE_UNAVAILABLE, message, generation, now
            )
            return Outcome(status, (Event("Warning", Reason.STORE_UNAVAILABLE, message),), retry=message)
        if record is not None:
            stored = StoredVersion(record.status, record.manifest, record.gate, record.gate_passed, record.error)
            if unmet is not None:
                # A passing verdict made with weaker thresholds than the spec's (a `kb eval` by hand, or
                # a version gated before this object existed) proves nothing: the eval Job judges the
                # version with the spec's gate, and its verdict is recorded beside the others.
                stored = replace(stored, gate=None, gate_passed=None)

    observed = VersionObservation(generation, _job_state(build), _job_state(evaluation), stored)
    plan = plan_knowledge_base_version(observed, _conditions(body), (body.get("status") or {}).get("phase"), now)
    context = VersionContext(name=name, namespace=namespace, uid=meta["uid"], spec=spec, image=config.runtime_image)
    for action in plan.actions:
        if dsn is None:
            break  # the Jobs could not reach the store either; the status below says why
        await kube.apply(build_build_job(context) if action is Action.CREATE_BUILD_JOB else build_eval_job(context))
    status = plan.status
    if dsn is None:
        ref = spec.store.dsn_secret_ref
        status["conditions"] = [
            c.model_dump(mode="json", by_alias=True, exclude_none=True)
            for c in set_condition(
                [Condition.model_validate(c) for c in status["conditions"]],
                type=KnowledgeBaseVersionCondition.READY,
                status="False",
                reason=Reason.PENDING,
                message=(
                    f"spec.store.dsnSecretRef: waiting for Secret {ref.name} (key {ref.key}) with the store's DSN; "
                    "if it exists, the operator may not be allowed to read it (the chart's rbac.storeSecretNames)"
                ),
                observed_generation=generation,
                now=now,
            )
        ]
    return Outcome(status, plan.events)


def gate_requirement(spec: KnowledgeBaseVersionSpec) -> GateRequirement:
    """What serving a version asks of its verdicts: one that passed at the spec's k with its thresholds.

    Checked when the version's status is planned and again inside the activation's transaction, so a
    version re-gated with weaker thresholds is neither Ready nor activated by the operator.
    """
    golden = spec.golden_set
    thresholds = golden.thresholds
    return GateRequirement(
        k=golden.k,
        thresholds={
            "precisionAtK": thresholds.precision_at_k,
            "recallAtK": thresholds.recall_at_k,
            "mrr": thresholds.mrr,
            "ndcgAtK": thresholds.ndcg_at_k,
            "answerPassRate": thresholds.answer_pass_rate,
        },
    )


async def versions_in_use(kube: Kube, namespace: str, version: str) -> list[str]:
    """RagDeployments that serve `version`, would roll back to it, or are rolling it out."""
    users = []
    for deployment in await kube.list(API_VERSION, "RagDeployment", namespace):
        status = deployment.get("status") or {}
        if version in _kept(status) or version in (status.get("activeVersion"), status.get("lastKnownGoodVersion")):
            users.append(deployment["metadata"]["name"])
    return users


def _kept(status: Mapping[str, Any]) -> dict[str, str]:
    """A RagDeployment's kept versions (see `kept_versions`) as its status records them."""
    rollout = status.get("rollout") or {}
    canary = rollout.get("canaryVersion") if rollout.get("phase") in ("Progressing", "Paused") else None
    return kept_versions(_history(dict(status)), canary)


async def drop_version(kube: Kube, observers: Observers, body: dict[str, Any]) -> None:
    try:
        spec = parse_spec(KnowledgeBaseVersionSpec, body)
    except SpecRefused:
        return  # never built: no store was written through a spec the operator refused
    dsn = await store_dsn(kube, body["metadata"]["namespace"], spec.store)
    if dsn is None:
        return  # nothing reachable to clean; the store was never written through this object
    async with observers.stores.use(dsn) as store:
        await store.drop_version(spec.knowledge_base, body["metadata"]["name"])


# ---- RagDeployment ----------------------------------------------------------------------------------


def _readiness(
    version: dict[str, Any] | None, name: str, knowledge_base: str
) -> tuple[DesiredVersion, StoreSpec | None]:
    if version is None:
        return DesiredVersion(name, VersionReadiness.MISSING, f"KnowledgeBaseVersion {name} not found"), None
    spec = _version_spec(version)
    if spec is None:
        # The version reports its own InvalidSpec; for this deployment it is a version that failed.
        return DesiredVersion(name, VersionReadiness.FAILED, f"KnowledgeBaseVersion {name} has an invalid spec"), None
    if spec.knowledge_base != knowledge_base:
        # A spec error the CRD schema cannot see (it is another object's field): named as the field.
        return DesiredVersion(
            name,
            VersionReadiness.INVALID,
            f"spec.knowledgeBase.version: {name} is a version of knowledge base {spec.knowledge_base!r}, "
            f"not of {knowledge_base!r}",
        ), spec.store
    status = version.get("status") or {}
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    if status.get("phase") == "Ready":
        return DesiredVersion(name, VersionReadiness.READY), spec.store
    if status.get("phase") == "Failed":
        return DesiredVersion(name, VersionReadiness.FAILED, ready.get("message", "failed")), spec.store
    return DesiredVersion(name, VersionReadiness.PENDING, f"{name} is {status.get('phase') or 'Pending'}"), spec.store


def _version_spec(version: Mapping[str, Any]) -> KnowledgeBaseVersionSpec | None:
    """Another object's spec, or None where the operator refuses it (that object reports why)."""
    try:
        return parse_spec(KnowledgeBaseVersionSpec, version)
    except SpecRefused:
        return None


def _history(status: dict[str, Any]) -> tuple[Revision, ...]:
    return tuple(
        Revision(
            r["revision"],
            r["kbVersion"],
            r["runtimeHash"],
            datetime.fromisoformat(r["promotedAt"]),
            r["outcome"],
            r.get("message"),
        )
        for r in status.get("history") or []
    )


async def reconcile_rollout(
    kube: Kube,
    observers: Observers,
    config: OperatorSettings,
    body: dict[str, Any],
    now: datetime,
    *,
    check_slo: bool,
) -> Outcome:
    available = RagDeploymentCondition.AVAILABLE
    pass_ = _rollout_pass(kube, observers, config, body, now, check_slo=check_slo)
    return await _refusing(pass_, body, available, now)


async def _rollout_pass(
    kube: Kube,
    observers: Observers,
    config: OperatorSettings,
    body: dict[str, Any],
    now: datetime,
    *,
    check_slo: bool,
) -> Outcome:
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    spec = parse_spec(RagDeploymentSpec, body)
    status = body.get("status") or {}
    history = _history(status)

    desired_object = await kube.get(API_VERSION, "KnowledgeBaseVersion", namespace, spec.knowledge_base.version)
    desired, store = _readiness(desired_object, spec.knowledge_base.version, spec.knowledge_base.name)
    desired_spec = _version_spec(desired_object) if desired_object is not None else None
    serving = current_revision(history)
    if desired.readiness is VersionReadiness.READY and desired_spec is not None:
        if serving is None or serving.kb_version != desired.name:
            desired = await _judged_by_its_gate(kube, observers, namespace, desired, desired_spec)
    if store is None and serving is not None:
        served = await kube.get(API_VERSION, "KnowledgeBaseVersion", namespace, serving.kb_version)
        served_spec = _version_spec(served) if served is not None else None
        if served_spec is not None:
            store = served_spec.store

    context = RuntimeContext(
        name=name,
        namespace=namespace,
        uid=meta["uid"],
        spec=spec,
        store=store or _placeholder_store(),
        image=spec.runtime.image or config.runtime_image,
        trusted_client_header=spec.limits.trusted_client_header or config.trusted_client_header or None,
    )
    template_hash = runtime_template_hash(context)

    progressive = await plan_pass(kube, config, body, spec, desired, history, template_hash, now)

    measured = SloMeasurement.model_validate(status["slo"]) if status.get("slo") else None
    watch = state_from_measurement(measured)
    rollback: RollbackRequest | None = None
    slo_status: dict[str, Any] | None = None
    baking = serving is not None and serving.outcome == "Baking"
    if check_slo and serving is not None and spec.monitoring.prometheus_url:
        async with PrometheusClient(
            spec.monitoring.prometheus_url, timeout_seconds=config.prometheus_timeout_seconds
        ) as prometheus:
            sample = await prometheus.sample(namespace, name, spec.slo.window, kb_version=progressive.slo_version)
        check = judge(sample, spec.slo)
        watch = advance(watch, check)
        slo_status = to_measurement(watch, sample, checked_at=now).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        # After one automatic rollback the operator holds: it never walks further back on its own.
        in_rollback = any(
            c.type == RagDeploymentCondition.ROLLED_BACK and c.status == "True" for c in _conditions(body)
        )
        decision = decide_rollback(
            watch,
            spec.slo,
            spec.rollout,
            baking=baking,
            has_known_good=last_known_good(history) is not None,
            current_revision_rolled_back=in_rollback,
        )
        if decision.roll_back:
            rollback = RollbackRequest(f"{decision.message}")

    deployment = await kube.get("apps/v1", "Deployment", namespace, child_name(name, "runtime"))
    deployment_status = (deployment or {}).get("status") or {}
    desired_replicas = int(((deployment or {}).get("spec") or {}).get("replicas") or spec.runtime.replicas)
    ready_replicas = int(deployment_status.get("readyReplicas") or 0)
    # Pods are read only when some are not ready: a steady deployment costs no extra call.
    pods = []
    if deployment is not None and ready_replicas < desired_replicas:
        pods = await kube.list("v1", "Pod", namespace, selector_labels(name, "runtime"))
    observed = RolloutObservation(
        generation=generation,
        desired=progressive.desired,
        runtime_hash=template_hash,
        history=history,
        ready_replicas=ready_replicas,
        desired_replicas=desired_replicas,
        bake_complete=serving is not None
        and bake_complete(serving.promoted_at, parse_duration(spec.rollout.bake_time), now, watch),
        rollback=rollback,
        overlay=progressive.plan.overlay,
        runtime_failure=runtime_failure(deployment, pods),
    )
    plan = plan_rollout(observed, _conditions(body), status.get("phase"), now)
    rollout_plan = progressive.plan
    events = [*rollout_plan.events, *plan.events]

    store_problem: str | None = None
    if store is not None:
        if plan.serve is not None:
            reason = f"RagDeployment {namespace}/{name}"
            served_spec = (
                desired_spec
                if plan.serve.kb_version == desired.name
                else await _named_version_spec(kube, namespace, plan.serve.kb_version)
            )
            requirement = gate_requirement(served_spec) if served_spec is not None else None
            try:
                await _point_at(
                    kube,
                    observers,
                    namespace,
                    store,
                    spec.knowledge_base.name,
                    plan.serve.kb_version,
                    requirement=requirement,
                    reason=reason,
                )
            except ActivationRefused as error:
                store_problem = f"the store refused to activate {plan.serve.kb_version}: {error}"
            except StoreError as error:
                store_problem = f"the store is unreachable, the activation pointer may lag: {error}"
            else:
                candidate = desired_spec
                try:
                    events += await _settle_traffic(
                        kube, observers, namespace, store, spec, rollout_plan, candidate, reason=reason
                    )
                except StoreError as error:
                    store_problem = f"the store did not take the traffic split: {error}"
                    if rollout_plan.traffic is TrafficChange.SET:
                        # The step did not happen: keep the rollout where it was and say nothing moved.
                        rollout_plan = replace(rollout_plan, status=previous_rollout(body), events=())
                        events = list(plan.events)
        # The runtime exists as soon as its store is known; its pods are ready once a version is active.
        served_hash = plan.serve.runtime_hash if plan.serve is not None else template_hash
        keep = {template_hash, served_hash, *(r.runtime_hash for r in plan.history)}
        if not await _apply_runtime(kube, observers, context, generation, served_hash, keep):
            events.append(
                Event(
                    "Warning",
                    "TemplateUnavailable",
                    f"no record of runtime template {served_hash}; running the spec's template {template_hash}",
                )
            )

    result = dict(plan.status)
    if serving is not None and plan.serve is not None and plan.serve.revision != serving.revision:
        # A different revision is served now: its SLO watch starts from zero.
        slo_status = (
            {**(slo_status or status.get("slo") or {}), "consecutiveBreaches": 0}
            if (slo_status or status.get("slo"))
            else None
        )
    result["replicas"] = int(deployment_status.get("replicas") or 0)
    result["readyReplicas"] = observed.ready_replicas
    if slo_status is not None:
        result["slo"] = slo_status
        result["conditions"] = _slo_condition(result["conditions"], slo_status, watch, generation, now)
    result["rollout"], result["conditions"] = rollout_status(rollout_plan, result["conditions"], generation, now)
    deleting = await _kept_and_deleting(kube, namespace, _kept(result), {spec.knowledge_base.version: desired_object})
    kept_conditions, deletion_events = version_deletion(
        [Condition.model_validate(c) for c in result["conditions"]], deleting, generation, now
    )
    result["conditions"] = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in kept_conditions]
    events += deletion_events
    if store_problem is not None:
        degraded = _with_condition(
            {"status": result},
            RagDeploymentCondition.DEGRADED,
            "True",
            Reason.STORE_UNAVAILABLE,
            store_problem,
            generation,
            now,
        )
        result["conditions"] = degraded["conditions"]
        return Outcome(result, tuple(events), retry=store_problem)
    return Outcome(result, tuple(events))


async def _point_at(
    kube: Kube,
    observers: Observers,
    namespace: str,
    store: StoreSpec,
    knowledge_base: str,
    version: str,
    *,
    requirement: GateRequirement | None,
    reason: str,
) -> None:
    """Moves the store's activation pointer to `version` if it points elsewhere (idempotent).

    With its KnowledgeBaseVersion's gate as `requirement`: the store refuses (ActivationRefused)
    a version none of whose verdicts passed with the spec's thresholds.
    """
    dsn = await store_dsn(kube, namespace, store)
    if dsn is None:
        return
    async with observers.stores.use(dsn) as knowledge:
        if (await knowledge.activation(knowledge_base)).active != version:
            await knowledge.activate(knowledge_base, version, reason=reason, requirement=requirement)


async def _judged_by_its_gate(
    kube: Kube, observers: Observers, namespace: str, desired: DesiredVersion, spec: KnowledgeBaseVersionSpec
) -> DesiredVersion:
    """A Ready version as the store judges it against its own spec's gate, before anything is planned.

    A version made Ready by an older operator on a verdict made with weaker thresholds is a version
    that failed its gate for this deployment (status names the gate), never a promotion the store
    then refuses: the plan records only what happens.
    """
    dsn = await store_dsn(kube, namespace, spec.store)
    if dsn is None:
        return desired  # nothing can be activated either; the version's own status says why
    try:
        async with observers.stores.use(dsn) as store:
            record = await store.get_version(spec.knowledge_base, desired.name)
            if record is None:
                return DesiredVersion(desired.name, VersionReadiness.FAILED, f"the store holds no {desired.name}")
            unmet = await store.unmet_requirement(record, gate_requirement(spec))
    except StoreError as error:
        return DesiredVersion(desired.name, VersionReadiness.PENDING, f"cannot read {desired.name}'s verdicts: {error}")
    return desired if unmet is None else DesiredVersion(desired.name, VersionReadiness.FAILED, unmet)


async def _kept_and_deleting(
    kube: Kube, namespace: str, kept: Mapping[str, str], known: Mapping[str, dict[str, Any] | None]
) -> dict[str, str]:
    """The kept versions (version -> why) whose KnowledgeBaseVersion is being deleted."""
    deleting = {}
    for name, why in kept.items():
        found = known[name] if name in known else await kube.get(API_VERSION, "KnowledgeBaseVersion", namespace, name)
        if found is not None and (found.get("metadata") or {}).get("deletionTimestamp"):
            deleting[name] = why
    return deleting


async def _named_version_spec(kube: Kube, namespace: str, name: str) -> KnowledgeBaseVersionSpec | None:
    found = await kube.get(API_VERSION, "KnowledgeBaseVersion", namespace, name)
    return _version_spec(found) if found is not None else None


async def _settle_traffic(
    kube: Kube,
    observers: Observers,
    namespace: str,
    store: StoreSpec,
    spec: RagDeploymentSpec,
    plan: ProgressivePlan,
    candidate: KnowledgeBaseVersionSpec | None,
    *,
    reason: str,
) -> list[Event]:
    """Writes or clears the store's traffic split as the rollout plan asks (see rollout.apply_traffic)."""
    dsn = await store_dsn(kube, namespace, store)
    if dsn is None:
        return []
    async with observers.stores.use(dsn) as knowledge:
        return await apply_traffic(
            kube,
            knowledge,
            namespace,
            spec.knowledge_base.name,
            plan,
            candidate,
            spec.rollout.strategy.progressive(),
            reason=reason,
        )


async def _apply_runtime(
    kube: Kube, observers: Observers, context: RuntimeContext, generation: int, served_hash: str, keep: set[str]
) -> bool:
    """Applies the runtime serving `served_hash`'s template; False if that template has no record.

    Each template is recorded (a ControllerRevision) before its pods exist, so any revision that
    ever ran can be restored exactly; records and settings no kept revision can return to are pruned.
    """
    spec_hash = runtime_template_hash(context)
    labels = selector_labels(context.name, "runtime")
    listed = {
        kind: await kube.list(api_version, kind, context.namespace, labels)
        for api_version, kind in (("apps/v1", "ControllerRevision"), ("v1", "ConfigMap"))
    }
    records = {
        (item["metadata"].get("labels") or {}).get(RUNTIME_HASH_LABEL): item for item in listed["ControllerRevision"]
    }
    if spec_hash not in records:
        await kube.create(build_controller_revision(context, spec_hash, revision=generation))
    served = None
    if served_hash != spec_hash and served_hash in records:
        served = StoredTemplate.from_controller_revision(records[served_hash])
    for manifest in build_runtime_children(context, served):
        if manifest["kind"] == "ServiceMonitor" and not await _serves_service_monitors(
            kube, observers, context.namespace
        ):
            continue
        await kube.apply(manifest)

    for api_version, kind in (("v1", "ConfigMap"), ("apps/v1", "ControllerRevision")):
        found = listed[kind]
        existing = {
            item["metadata"]["name"]: (item["metadata"].get("labels") or {}).get(RUNTIME_HASH_LABEL) for item in found
        }
        for name in stale_templates(existing, keep):
            await kube.delete(api_version, kind, context.namespace, name)
    return served_hash == spec_hash or served is not None


SERVICE_MONITOR_RECHECK_SECONDS = 300.0


async def _serves_service_monitors(kube: Kube, observers: Observers, namespace: str) -> bool:
    """Whether the API serves ServiceMonitors, asked again every few minutes (the CRD may arrive later)."""
    now = asyncio.get_running_loop().time()
    known = observers.service_monitors.get(namespace)
    if known is None or now - known[1] > SERVICE_MONITOR_RECHECK_SECONDS:
        known = (await kube.has_resource("monitoring.coreos.com/v1", "ServiceMonitor", namespace), now)
        observers.service_monitors[namespace] = known
    return known[0]


def _slo_condition(
    conditions: list[dict[str, Any]], slo: dict[str, Any], watch: Any, generation: int, now: datetime
) -> list[dict[str, Any]]:
    verdict = slo["verdict"]
    status: ConditionStatus = "True" if verdict == "Met" else "False" if verdict == "Breached" else "Unknown"
    reason = str(watch.last_check.reason) if watch.last_check else Reason.SLO_INCONCLUSIVE
    message = watch.last_check.message if watch.last_check else ""
    updated = set_condition(
        [Condition.model_validate(c) for c in conditions],
        type=RagDeploymentCondition.SLO_HEALTHY,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        now=now,
    )
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in updated]


def _placeholder_store() -> StoreSpec:
    """Used only to render (not apply) a template before any version exists: the hash ignores it."""
    from .api.common import SecretKeyRef

    return StoreSpec(dsn_secret_ref=SecretKeyRef(name="unset", key="dsn"))
