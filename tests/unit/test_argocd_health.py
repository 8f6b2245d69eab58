"""Argo CD's health checks for our kinds, run the way Argo CD runs them, on statuses the operator writes.

The scripts live where Argo CD's own repository keeps its built-in checks
(`argocd/resource_customizations/<group>/<kind>/health.lua`, with `health_test.yaml` and `testdata/`),
so they can be contributed upstream as they are; `argocd/argocd-cm.yaml` ships the same Lua as
`resource.customizations.health.<group>_<kind>` keys, and a test keeps the two identical.

The testdata objects are not written by hand: each is rendered from the operator's own pure planners
(`plan_knowledge_base_version`, `plan_rollout`, the SLO `judge`) and validated by the status models,
and a test fails when a committed file differs from its rendering (regenerate with
`python -m tests.unit.test_argocd_health`). So a change in what the operator writes shows up here.

The Lua runs in lupa's real Lua 5.4 with Argo CD's sandbox reproduced: `obj` as a global, only the
base, table and a safe os library (Argo CD opens no string or math library for argocd-cm scripts, so
neither can the scripts here), and the returned table read as {status, message} with Argo CD's list
of valid health codes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lupa.lua54 as lua54  # type: ignore[import-untyped]  # lupa ships no type information
import pytest
import yaml
from pydantic import ValidationError

from ragops_operator.api import (
    KnowledgeBaseVersionSpec,
    KnowledgeBaseVersionStatus,
    RagDeploymentSpec,
    RagDeploymentStatus,
)
from ragops_operator.api.common import API_VERSION, Condition
from ragops_operator.api.conditions import Reason
from ragops_operator.api.rollout import RolloutStatus
from ragops_operator.controllers import _slo_condition, invalid_spec
from ragops_operator.reconcile.knowledgebaseversion import (
    JobState,
    ObservedJob,
    StoredVersion,
    VersionObservation,
    plan_knowledge_base_version,
)
from ragops_operator.reconcile.progressive import Action, ManualAction, ProgressiveObservation, plan_progressive
from ragops_operator.reconcile.ragdeployment import (
    DesiredVersion,
    Revision,
    RollbackRequest,
    RolloutObservation,
    RolloutOverlay,
    VersionReadiness,
    plan_rollout,
)
from ragops_operator.reconcile.slo import SloSample, advance, judge, to_measurement
from ragops_operator.reconcile.slo import WatchState as SloWatch
from ragops_operator.reconcile.status import set_condition
from ragops_operator.rollout import rollout_status

REPO_ROOT = Path(__file__).resolve().parents[2]
ARGOCD = REPO_ROOT / "argocd"
CUSTOMIZATIONS = ARGOCD / "resource_customizations" / "ragops.dev"
QUICKSTART = REPO_ROOT / "examples" / "quickstart"
KINDS = ("KnowledgeBaseVersion", "RagDeployment")

# What gitops-engine accepts (health.HealthStatusCode); anything else Argo CD turns into Unknown.
VALID_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

NOW = datetime(2025, 6, 2, 9, 30, tzinfo=UTC)
EARLIER = NOW - timedelta(hours=1)
NAMESPACE = "ragops-quickstart"
Doc = dict[str, Any]


# ---- Argo CD's Lua sandbox -----------------------------------------------------------------------------

_SANDBOX = """
local script, chunkname = ...
local env = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
  print = print, rawequal = rawequal, rawget = rawget, rawset = rawset, select = select,
  setmetatable = setmetatable, getmetatable = getmetatable, tonumber = tonumber,
  tostring = tostring, type = type, unpack = table.unpack, xpcall = xpcall,
  table = table,
  os = {clock = os.clock, date = os.date, difftime = os.difftime, time = os.time},
}
env._G = env
return env, load(script, chunkname, "t", env)
"""


def run_health_script(script: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """Runs `script` like Argo CD's lua.VM.ExecuteHealthLua: `obj` global, result table -> HealthStatus."""
    runtime = lua54.LuaRuntime(register_eval=False, register_builtins=False, unpack_returned_tuples=True)
    # Without the string library, strings have no methods (`s:sub()` fails in Argo CD): drop them here too.
    runtime.execute("getmetatable('').__index = nil")
    env, chunk = runtime.execute(_SANDBOX, script, "health.lua")
    assert chunk is not None, "the script does not compile"
    # Argo CD decodes the object into nested tables (lists 1-based), never userdata.
    env["obj"] = runtime.table_from(copy.deepcopy(dict(obj)), recursive=True)
    returned = chunk()
    assert lua54.lua_type(returned) == "table", f"expect table output from Lua script, not {lua54.lua_type(returned)}"
    result = {str(key): value for key, value in returned.items()}
    assert set(result) <= {"status", "message"}, result
    assert result.get("status") in VALID_HEALTH, f"Lua returned an invalid health status: {result}"
    return {"status": str(result["status"]), "message": str(result.get("message", ""))}


def health_script(kind: str) -> str:
    return (CUSTOMIZATIONS / kind / "health.lua").read_text()


def test_the_sandbox_is_as_narrow_as_argo_cd_s() -> None:
    # A script using what Argo CD does not open fails here as it would there.
    obj = {"metadata": {"name": "x"}}
    for forbidden in ("string.format('%s', 'a')", "('abc'):sub(1, 1)", "math.floor(1.5)", "io.write('x')"):
        with pytest.raises(lua54.LuaError):
            run_health_script(f"local x = {forbidden}\nreturn {{status = 'Healthy'}}", obj)
    assert run_health_script("return {status = 'Healthy', message = obj.metadata.name .. '!'}", obj) == {
        "status": "Healthy",
        "message": "x!",
    }
    with pytest.raises(AssertionError, match="invalid health status"):
        run_health_script("return {status = 'Fine'}", obj)


# ---- fixture objects from the operator's planners ------------------------------------------------------


def example(name: str, kind: str) -> Doc:
    documents = [d for d in yaml.safe_load_all((QUICKSTART / name).read_text()) if d and d["kind"] == kind]
    (document,) = documents
    found: Doc = document
    return found


def dumped(conditions: list[Condition]) -> list[Doc]:
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]


def checked_status(model: type[KnowledgeBaseVersionStatus] | type[RagDeploymentStatus], status: Doc) -> Doc:
    """`status` as stored: valid for the status model, with no field the CRD's status does not declare."""
    present: Doc = _without_nulls(status)  # a merge patch's null removes the key: it is never stored
    declared = model.model_validate(present).model_dump(by_alias=True)
    assert set(present) <= set(declared), set(present) - set(declared)
    return present


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def kbv_object(status: Doc | None, *, generation: int = 1, deleting: bool = False) -> Doc:
    document = example("knowledge-base.yaml", "KnowledgeBaseVersion")
    # The apiserver fills every default in; Argo CD sees the object with them.
    spec = KnowledgeBaseVersionSpec.model_validate(document["spec"]).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    metadata: Doc = {"name": document["metadata"]["name"], "namespace": NAMESPACE, "generation": generation}
    if deleting:
        metadata["deletionTimestamp"] = NOW.isoformat()
        metadata["finalizers"] = ["ragops.dev/finalizer"]
    obj: Doc = {"apiVersion": API_VERSION, "kind": "KnowledgeBaseVersion", "metadata": metadata, "spec": spec}
    if status is not None:
        obj["status"] = checked_status(KnowledgeBaseVersionStatus, status)
    return obj


def ragd_object(
    status: Doc | None, *, generation: int = 1, replicas: int | None = None, strategy: Doc | None = None
) -> Doc:
    document = example("ragdeployment.yaml", "RagDeployment")
    if replicas is not None:
        document["spec"]["runtime"]["replicas"] = replicas
    if strategy is not None:
        document["spec"].setdefault("rollout", {})["strategy"] = strategy
    spec = RagDeploymentSpec.model_validate(document["spec"]).model_dump(mode="json", by_alias=True, exclude_none=True)
    metadata: Doc = {"name": document["metadata"]["name"], "namespace": NAMESPACE, "generation": generation}
    obj: Doc = {"apiVersion": API_VERSION, "kind": "RagDeployment", "metadata": metadata, "spec": spec}
    if status is not None:
        obj["status"] = checked_status(RagDeploymentStatus, status)
    return obj


MANIFEST: Doc = {
    "embeddingProvider": "hashing",
    "embeddingModel": "hashing-v1",
    "dimensions": 384,
    "chunking": "recursive/512/64",
    "index": "hnsw/m=16/ef=64/cosine",
    "sourcesDigest": "9" * 64,
    "documents": 3,
    "chunks": 3,
    "reusedEmbeddings": 0,
    "buildSeconds": 1.5,
    "createdAt": EARLIER.isoformat(),
}
GATE_PASSED: Doc = {
    "metrics": {"precisionAtK": 0.333, "recallAtK": 1.0, "mrr": 1.0, "ndcgAtK": 1.0, "hitRate": 1.0},
    "failedMetrics": [],
    "cases": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
}
GATE_FAILED: Doc = {
    **GATE_PASSED,
    "metrics": {**GATE_PASSED["metrics"], "mrr": 0.5},
    "failedMetrics": ["mrr=0.500<0.8"],
}
MISSING, RUNNING = ObservedJob(JobState.MISSING), ObservedJob(JobState.RUNNING)


def planned_version(
    build: ObservedJob, evaluation: ObservedJob, stored: StoredVersion | None, generation: int = 1
) -> Doc:
    """The status one pass writes, after an earlier pass left a Building status behind."""
    first = plan_knowledge_base_version(VersionObservation(generation, MISSING, MISSING, None), [], None, EARLIER)
    earlier = [Condition.model_validate(c) for c in first.status["conditions"]]
    observed = VersionObservation(generation, build, evaluation, stored)
    return plan_knowledge_base_version(observed, earlier, first.status["phase"], NOW).status


def store_unavailable(status: Doc) -> Doc:
    # As controllers.reconcile_version reports it: the last status, with Ready set to StoreUnavailable.
    conditions = set_condition(
        [Condition.model_validate(c) for c in status["conditions"]],
        type="Ready",
        status="False",
        reason=Reason.STORE_UNAVAILABLE,
        message="the store is unreachable: cannot connect to PostgreSQL at pg-rw:5432",
        observed_generation=1,
        now=NOW,
    )
    return {**status, "conditions": dumped(conditions)}


def in_use(status: Doc) -> Doc:
    # As handlers.knowledgebaseversion.delete reports a version still served.
    conditions = set_condition(
        [Condition.model_validate(c) for c in status["conditions"]],
        type="Ready",
        status="False",
        reason=Reason.IN_USE,
        message="in use by RagDeployment handbook: deletion waits until none serves or falls back to it",
        observed_generation=1,
        now=NOW,
    )
    return {**status, "conditions": dumped(conditions)}


def invalid(spec_model: type[KnowledgeBaseVersionSpec] | type[RagDeploymentSpec], bad_spec: Doc, ready: str) -> Doc:
    try:
        spec_model.model_validate(bad_spec)
    except ValidationError as error:
        return invalid_spec({"metadata": {"generation": 1}, "status": {}}, error, ready, NOW).status
    raise AssertionError("the spec was expected to be invalid")


BUILT = StoredVersion("built", MANIFEST, None, None)
GATED = StoredVersion("built", MANIFEST, GATE_PASSED, True)
BELOW = StoredVersion("built", MANIFEST, GATE_FAILED, False)


def handbook_revision(number: int, version: str, outcome: Any, runtime_hash: str = "0123456789ab") -> Revision:
    return Revision(number, version, runtime_hash, EARLIER, outcome)


def planned_rollout(
    desired: DesiredVersion,
    history: tuple[Revision, ...],
    ready: int,
    wanted: int,
    *,
    bake_complete: bool = False,
    rollback: RollbackRequest | None = None,
    runtime_hash: str = "0123456789ab",
    overlay: RolloutOverlay | None = None,
) -> Doc:
    observed = RolloutObservation(
        generation=1,
        desired=desired,
        runtime_hash=runtime_hash,
        history=history,
        ready_replicas=ready,
        desired_replicas=wanted,
        bake_complete=bake_complete,
        rollback=rollback,
        overlay=overlay or RolloutOverlay(),
    )
    status = plan_rollout(observed, [], None, NOW).status
    # What controllers.reconcile_rollout adds from the runtime Deployment.
    return {**status, "replicas": wanted, "readyReplicas": ready}


def with_slo(status: Doc, sample: SloSample | None) -> Doc:
    """The status after an SLO check, through the same judge/advance/condition path as the operator."""
    spec = RagDeploymentSpec.model_validate(example("ragdeployment.yaml", "RagDeployment")["spec"])
    watch = advance(SloWatch(), judge(sample, spec.slo))
    slo = to_measurement(watch, sample, checked_at=NOW).model_dump(mode="json", by_alias=True, exclude_none=True)
    return {**status, "slo": slo, "conditions": _slo_condition(status["conditions"], slo, watch, 1, NOW)}


def planned_canary(steps: list[Doc], actions: tuple[ManualAction, ...] = ()) -> Doc:
    """A canary of handbook-v2 against handbook-v1, as the step machine and the revision planner write it:
    started an hour ago, then one more pass now (with `actions`)."""
    strategy = {"canary": {"steps": steps, "timeout": "3h"}}
    spec = RagDeploymentSpec.model_validate(
        {**example("ragdeployment.yaml", "RagDeployment")["spec"], "rollout": {"strategy": strategy}}
    )
    previous: RolloutStatus | None = None
    plan = None
    for now, asked in ((EARLIER, ()), (NOW, actions)):
        plan = plan_progressive(
            ProgressiveObservation(
                strategy=spec.rollout.strategy,
                slo=spec.slo,
                candidate=DesiredVersion("handbook-v2", VersionReadiness.READY),
                stable="handbook-v1",
                stable_baking=False,
                rolled_back=False,
                previous=previous,
                now=now,
                actions=asked,
            )
        )
        previous = plan.status
    assert plan is not None
    status = planned_rollout(READY_V1, (GOOD_V1,), 1, 1, overlay=plan.overlay)
    rollout, conditions = rollout_status(plan, status["conditions"], 1, NOW)
    return ragd_object({**status, "rollout": rollout, "conditions": conditions}, strategy=strategy)


READY_V1 = DesiredVersion("handbook-v1", VersionReadiness.READY)
GOOD_V1 = handbook_revision(1, "handbook-v1", "KnownGood")
TRAFFIC_OK = SloSample(
    requests=500, p95_latency_seconds=0.4, error_ratio=0.0, satisfaction=0.9, cost_per_query_usd=0, raters=5
)
TRAFFIC_SLOW = SloSample(
    requests=500, p95_latency_seconds=2.5, error_ratio=0.0, satisfaction=0.9, cost_per_query_usd=0, raters=5
)
TRAFFIC_LOW = SloSample(
    requests=3, p95_latency_seconds=0.4, error_ratio=0.0, satisfaction=0.9, cost_per_query_usd=0, raters=5
)


@dataclass(frozen=True)
class Scenario:
    kind: str
    name: str
    expected: str
    """The Argo CD health this status must map to: the intent, stated apart from health_test.yaml."""
    render: Callable[[], Doc]


SCENARIOS = (
    Scenario("KnowledgeBaseVersion", "no-status", "Progressing", lambda: kbv_object(None)),
    Scenario(
        "KnowledgeBaseVersion", "building", "Progressing", lambda: kbv_object(planned_version(RUNNING, MISSING, None))
    ),
    Scenario(
        "KnowledgeBaseVersion",
        "evaluating",
        "Progressing",
        lambda: kbv_object(planned_version(ObservedJob(JobState.SUCCEEDED), RUNNING, BUILT)),
    ),
    Scenario("KnowledgeBaseVersion", "ready", "Healthy", lambda: kbv_object(planned_version(MISSING, MISSING, GATED))),
    Scenario(
        "KnowledgeBaseVersion",
        "gate-below-threshold",
        "Degraded",
        lambda: kbv_object(planned_version(MISSING, MISSING, BELOW)),
    ),
    Scenario(
        "KnowledgeBaseVersion",
        "build-failed",
        "Degraded",
        lambda: kbv_object(
            planned_version(ObservedJob(JobState.FAILED, "Job has reached the specified backoff limit"), MISSING, None)
        ),
    ),
    Scenario(
        "KnowledgeBaseVersion",
        "store-unavailable",
        "Degraded",
        lambda: kbv_object(store_unavailable(planned_version(RUNNING, MISSING, None))),
    ),
    Scenario(
        "KnowledgeBaseVersion",
        "invalid-spec",
        "Degraded",
        lambda: kbv_object(
            invalid(
                KnowledgeBaseVersionSpec,
                {**example("knowledge-base.yaml", "KnowledgeBaseVersion")["spec"], "chunking": {"overlap": 600}},
                "Ready",
            )
        ),
    ),
    Scenario(
        "KnowledgeBaseVersion",
        "generation-not-observed",
        "Progressing",
        lambda: kbv_object(planned_version(MISSING, MISSING, GATED), generation=2),
    ),
    Scenario(
        "KnowledgeBaseVersion",
        "deleting-in-use",
        "Progressing",
        lambda: kbv_object(in_use(planned_version(MISSING, MISSING, GATED)), deleting=True),
    ),
    Scenario("RagDeployment", "no-status", "Progressing", lambda: ragd_object(None)),
    Scenario(
        "RagDeployment",
        "waiting-for-version",
        "Progressing",
        lambda: ragd_object(
            planned_rollout(
                DesiredVersion("handbook-v1", VersionReadiness.PENDING, "handbook-v1 is Building"), (), 0, 1
            )
        ),
    ),
    Scenario("RagDeployment", "baking", "Progressing", lambda: ragd_object(planned_rollout(READY_V1, (), 1, 1))),
    Scenario(
        "RagDeployment",
        "healthy",
        "Healthy",
        lambda: ragd_object(with_slo(planned_rollout(READY_V1, (GOOD_V1,), 1, 1), TRAFFIC_OK)),
    ),
    Scenario(
        "RagDeployment",
        "healthy-slo-inconclusive",
        "Healthy",
        lambda: ragd_object(with_slo(planned_rollout(READY_V1, (GOOD_V1,), 1, 1), TRAFFIC_LOW)),
    ),
    Scenario(
        "RagDeployment",
        "slo-breached",
        "Degraded",
        lambda: ragd_object(with_slo(planned_rollout(READY_V1, (GOOD_V1,), 1, 1), TRAFFIC_SLOW)),
    ),
    Scenario(
        "RagDeployment",
        "rolled-back",
        "Degraded",
        lambda: ragd_object(
            planned_rollout(
                DesiredVersion("handbook-v2", VersionReadiness.READY),
                (GOOD_V1, handbook_revision(2, "handbook-v2", "Baking")),
                1,
                1,
                rollback=RollbackRequest("p95LatencyMs=2500>1000 in 2 consecutive checks"),
            )
        ),
    ),
    Scenario(
        "RagDeployment",
        "version-failed-gate",
        "Degraded",
        lambda: ragd_object(
            planned_rollout(
                DesiredVersion("handbook-v2", VersionReadiness.FAILED, "gate below threshold: mrr=0.500<0.8"),
                (GOOD_V1,),
                1,
                1,
            )
        ),
    ),
    Scenario(
        "RagDeployment",
        "nothing-served-version-failed",
        "Degraded",
        lambda: ragd_object(
            planned_rollout(
                DesiredVersion("handbook-v1", VersionReadiness.FAILED, "gate below threshold: mrr=0.500<0.8"), (), 0, 1
            )
        ),
    ),
    Scenario(
        "RagDeployment",
        "replicas-rolling-out",
        "Progressing",
        lambda: ragd_object(planned_rollout(READY_V1, (GOOD_V1,), 1, 3)),
    ),
    Scenario(
        "RagDeployment",
        "scaled-to-zero",
        "Suspended",
        lambda: ragd_object(planned_rollout(READY_V1, (GOOD_V1,), 0, 0), replicas=0),
    ),
    Scenario(
        "RagDeployment",
        "invalid-spec",
        "Degraded",
        lambda: ragd_object(
            invalid(
                RagDeploymentSpec,
                {**example("ragdeployment.yaml", "RagDeployment")["spec"], "retrieval": {"topK": 3, "rerankTopK": 5}},
                "Available",
            )
        ),
    ),
    Scenario(
        "RagDeployment",
        "canary-progressing",
        "Progressing",
        lambda: planned_canary([{"setWeight": 10}, {"pause": {"duration": "2h"}}]),
    ),
    Scenario(
        "RagDeployment",
        "canary-paused",
        "Suspended",
        lambda: planned_canary([{"setWeight": 10}, {"pause": {}}]),
    ),
    Scenario(
        "RagDeployment",
        "canary-aborted",
        "Degraded",
        lambda: planned_canary(
            [{"setWeight": 10}, {"pause": {"duration": "2h"}}], (ManualAction(Action.ABORT, "abort"),)
        ),
    ),
    Scenario(
        "RagDeployment",
        "generation-not-observed",
        "Progressing",
        lambda: ragd_object(planned_rollout(READY_V1, (GOOD_V1,), 1, 1), generation=2),
    ),
)
SCENARIO_IDS = [f"{s.kind}/{s.name}" for s in SCENARIOS]


def render_testdata(scenario: Scenario) -> str:
    header = f"# Rendered from the operator's planners by tests/unit/test_argocd_health.py: {scenario.name}.\n"
    return header + yaml.safe_dump(scenario.render(), sort_keys=False, width=120)


def fixture_path(scenario: Scenario) -> Path:
    return CUSTOMIZATIONS / scenario.kind / "testdata" / f"{scenario.name}.yaml"


ARGOCD_CM_HEADER = """\
# Argo CD health checks for the ragops.dev kinds. Merge into Argo CD's own argocd-cm:
#   kubectl -n argocd patch configmap argocd-cm --patch-file argocd/argocd-cm.yaml
# Generated from argocd/resource_customizations/ragops.dev/*/health.lua by
# `python -m tests.unit.test_argocd_health`; a test keeps the two identical.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
"""


def render_argocd_cm() -> str:
    text = ARGOCD_CM_HEADER
    for kind in KINDS:
        body = "".join(f"    {line}\n" if line else "\n" for line in health_script(kind).splitlines())
        text += f"  resource.customizations.health.ragops.dev_{kind}: |\n{body}"
    return text


# ---- the tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=SCENARIO_IDS)
def test_testdata_is_what_the_operator_writes(scenario: Scenario) -> None:
    path = fixture_path(scenario)
    assert path.exists(), f"missing {path}: run `python -m tests.unit.test_argocd_health`"
    assert path.read_text() == render_testdata(scenario), (
        f"{path} is stale: run `python -m tests.unit.test_argocd_health`"
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=SCENARIO_IDS)
def test_each_status_maps_to_its_intended_health(scenario: Scenario) -> None:
    health = run_health_script(health_script(scenario.kind), scenario.render())
    assert health["status"] == scenario.expected, health
    assert health["message"], "Argo CD shows the message next to the status: never empty"


@pytest.mark.parametrize("kind", KINDS)
def test_health_test_yaml_like_argo_cd_s_own(kind: str) -> None:
    """Every case of health_test.yaml, as Argo CD's TestLuaHealthScript runs it, and every testdata file used."""
    cases = yaml.safe_load((CUSTOMIZATIONS / kind / "health_test.yaml").read_text())["tests"]
    used = set()
    for case in cases:
        path = CUSTOMIZATIONS / kind / case["inputPath"]
        used.add(path.name)
        health = run_health_script(health_script(kind), yaml.safe_load(path.read_text()))
        assert health == case["healthStatus"], case["inputPath"]
    assert used == {p.name for p in (CUSTOMIZATIONS / kind / "testdata").glob("*.yaml")}
    assert used == {f"{s.name}.yaml" for s in SCENARIOS if s.kind == kind}


def test_argocd_cm_carries_exactly_the_scripts() -> None:
    path = ARGOCD / "argocd-cm.yaml"
    assert path.read_text() == render_argocd_cm(), f"{path} is stale: run `python -m tests.unit.test_argocd_health`"
    data = yaml.safe_load(path.read_text())["data"]
    assert data == {f"resource.customizations.health.ragops.dev_{kind}": health_script(kind) for kind in KINDS}


def test_a_kind_argo_cd_maps_to_a_script_is_one_the_crds_serve() -> None:
    # Argo CD looks a script up by "<group>/<kind>" (the directory) or "<group>_<kind>" (the argocd-cm key).
    for crd_file in (REPO_ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(crd_file.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        assert (ARGOCD / "resource_customizations" / group / kind / "health.lua").exists(), kind


def write_all() -> None:
    for scenario in SCENARIOS:
        fixture_path(scenario).parent.mkdir(parents=True, exist_ok=True)
        fixture_path(scenario).write_text(render_testdata(scenario))
    (ARGOCD / "argocd-cm.yaml").write_text(render_argocd_cm())


if __name__ == "__main__":
    write_all()
