"""Condition types, reasons and phases of both kinds, as typed constants.

Handlers and pure planners compare against these, never against string literals, so a
misspelt reason is a type error instead of a status no dashboard matches. Reasons are
CamelCase as metav1.Condition requires.
"""

from enum import StrEnum


class KnowledgeBaseVersionPhase(StrEnum):
    PENDING = "Pending"
    BUILDING = "Building"
    EVALUATING = "Evaluating"
    READY = "Ready"
    FAILED = "Failed"


class KnowledgeBaseVersionCondition(StrEnum):
    BUILT = "Built"
    """The index was built and the store holds the version's manifest."""
    GATE_PASSED = "GatePassed"
    """The golden-set evaluation met every threshold."""
    READY = "Ready"
    """Built and gate passed: the version may be promoted."""


class RagDeploymentPhase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    BAKING = "Baking"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class RolloutPhase(StrEnum):
    """Where a progressive rollout of a knowledge-base version is (`status.rollout.phase`)."""

    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    ABORTED = "Aborted"
    HEALTHY = "Healthy"


class RagDeploymentCondition(StrEnum):
    AVAILABLE = "Available"
    """Enough runtime replicas are ready to serve."""
    PROGRESSING = "Progressing"
    """A rollout or a knowledge-base promotion is under way."""
    DEGRADED = "Degraded"
    """Serving, but below the desired state (fewer replicas, a failed promotion, a fallback)."""
    ROLLED_BACK = "RolledBack"
    """The last revision breached its SLOs and was rolled back to the last known-good one."""
    SLO_HEALTHY = "SLOHealthy"
    """The latest SLO check met every objective (Unknown when it was inconclusive)."""
    PROMOTED = "Promoted"
    """canary and shadow strategies: spec.knowledgeBase.version is the version served (`kubectl wait` for it)."""
    ABORTED = "Aborted"
    """canary and shadow strategies: the rollout of spec.knowledgeBase.version was aborted."""
    PAUSED = "Paused"
    """canary and shadow strategies: the rollout waits for a manual promote or resume."""
    VERSION_DELETING = "VersionDeleting"
    """A KnowledgeBaseVersion the deployment serves or would roll back to is being deleted; it is kept."""


class Reason(StrEnum):
    """Reasons shared by both kinds' conditions."""

    INVALID_SPEC = "InvalidSpec"
    STORE_UNAVAILABLE = "StoreUnavailable"
    PENDING = "Pending"
    BUILDING = "Building"
    BUILD_SUCCEEDED = "BuildSucceeded"
    BUILD_FAILED = "BuildFailed"
    MANIFEST_MISSING = "ManifestMissing"
    EVALUATING = "Evaluating"
    GATE_PASSED = "GatePassed"
    GATE_BELOW_THRESHOLD = "GateBelowThreshold"
    GATE_FAILED = "GateFailed"
    IN_USE = "InUse"
    WAITING_FOR_VERSION = "WaitingForVersion"
    VERSION_NOT_READY = "VersionNotReady"
    VERSION_FAILED_GATE = "VersionFailedGate"
    PROMOTED = "Promoted"
    ROLLING_OUT = "RollingOut"
    BAKING = "Baking"
    REPLICAS_READY = "ReplicasReady"
    REPLICAS_UNAVAILABLE = "ReplicasUnavailable"
    SLO_MET = "SLOMet"
    SLO_BREACHED = "SLOBreached"
    SLO_INCONCLUSIVE = "SLOInconclusive"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    ROLLED_BACK = "RolledBack"
    ROLLBACK_DISABLED = "RollbackDisabled"
    # Progressive delivery (canary and shadow strategies).
    ROLLOUT_STARTED = "RolloutStarted"
    ROLLOUT_RESTARTED = "RolloutRestarted"
    ROLLOUT_CANCELLED = "RolloutCancelled"
    ROLLOUT_PROGRESSING = "RolloutProgressing"
    ROLLOUT_PAUSED = "RolloutPaused"
    ROLLOUT_RESUMED = "RolloutResumed"
    ROLLOUT_PROMOTING = "RolloutPromoting"
    ROLLOUT_ABORTED = "RolloutAborted"
    STEP_COMPLETED = "StepCompleted"
    WEIGHT_CHANGED = "WeightChanged"
    ANALYSIS_PASSED = "AnalysisPassed"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    PROMETHEUS_UNAVAILABLE = "PrometheusUnavailable"
    VERSION_DELETING = "VersionDeleting"
    VERSION_RELEASED = "VersionReleased"
    PROMETHEUS_AVAILABLE = "PrometheusAvailable"
    CANDIDATE_NOT_READY = "CandidateNotReady"
    MANUAL_ABORT = "ManualAbort"
    ROLLOUT_TIMEOUT = "RolloutTimeout"
    ACTION_APPLIED = "ActionApplied"
    ACTION_IGNORED = "ActionIgnored"
    PROBES_UNAVAILABLE = "ProbesUnavailable"
