"""The two custom resource kinds: names, printer columns and the models behind them.

crdgen renders CRDs from these; the operator watches by them. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from .common import GROUP, VERSION
from .knowledgebaseversion import KnowledgeBaseVersionSpec, KnowledgeBaseVersionStatus
from .ragdeployment import RagDeploymentSpec, RagDeploymentStatus


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0


@dataclass(frozen=True)
class ResourceKind:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    printer_columns: tuple[PrinterColumn, ...]

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"


CATEGORY = "ragops"

_AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation.")


def _condition_column(name: str, condition: str, priority: int = 0) -> PrinterColumn:
    return PrinterColumn(
        name,
        "string",
        f'.status.conditions[?(@.type=="{condition}")].status',
        f"Status of the {condition} condition.",
        priority,
    )


KNOWLEDGE_BASE_VERSION = ResourceKind(
    kind="KnowledgeBaseVersion",
    plural="knowledgebaseversions",
    singular="knowledgebaseversion",
    short_names=("kbv",),
    description=(
        "One immutable version of a knowledge base: sources, chunking, embedding model, pgvector "
        "index and a golden set. The operator builds its index and gates it on the golden set."
    ),
    spec_model=KnowledgeBaseVersionSpec,
    status_model=KnowledgeBaseVersionStatus,
    printer_columns=(
        PrinterColumn("KB", "string", ".spec.knowledgeBase", "Knowledge base this is a version of."),
        PrinterColumn("Phase", "string", ".status.phase", "Pending, Building, Evaluating, Ready or Failed."),
        _condition_column("Ready", "Ready"),
        PrinterColumn("Gate", "boolean", ".status.gate.passed", "Whether the golden-set gate passed."),
        PrinterColumn("nDCG", "number", ".status.gate.metrics.ndcgAtK", "Mean nDCG@k on the golden set."),
        PrinterColumn("Recall", "number", ".status.gate.metrics.recallAtK", "Mean recall@k.", priority=1),
        PrinterColumn("Chunks", "integer", ".status.chunks", "Chunks stored."),
        PrinterColumn(
            "Model", "string", ".status.manifest.embeddingModel", "Embedding model of the version.", priority=1
        ),
        _AGE,
    ),
)

RAG_DEPLOYMENT = ResourceKind(
    kind="RagDeployment",
    plural="ragdeployments",
    singular="ragdeployment",
    short_names=("ragd",),
    description=(
        "A served RAG endpoint: runtime pods, the knowledge-base version they serve, limits, cache "
        "and SLOs. New versions are promoted only through their gate and rolled back on SLO breach."
    ),
    spec_model=RagDeploymentSpec,
    status_model=RagDeploymentStatus,
    printer_columns=(
        PrinterColumn("KB", "string", ".spec.knowledgeBase.name", "Knowledge base served."),
        PrinterColumn("Desired", "string", ".spec.knowledgeBase.version", "Version asked for."),
        PrinterColumn("Active", "string", ".status.activeVersion", "Version being served."),
        PrinterColumn("Phase", "string", ".status.phase", "Rollout phase."),
        PrinterColumn(
            "Rollout", "string", ".status.rollout.phase", "Canary or shadow rollout: Progressing, Paused, Aborted ..."
        ),
        PrinterColumn("Step", "integer", ".status.rollout.currentStepIndex", "Rollout step in progress (0-based)."),
        PrinterColumn("Weight", "integer", ".status.rollout.weight", "Percent of queries the candidate answers."),
        PrinterColumn("Ready", "integer", ".status.readyReplicas", "Runtime pods ready to serve."),
        _condition_column("Available", "Available"),
        _condition_column("SLO", "SLOHealthy"),
        PrinterColumn("Known-Good", "string", ".status.lastKnownGoodVersion", "Rollback target.", priority=1),
        PrinterColumn("Canary", "string", ".status.rollout.canaryVersion", "Candidate version.", priority=1),
        _AGE,
    ),
)

KINDS: tuple[ResourceKind, ...] = (KNOWLEDGE_BASE_VERSION, RAG_DEPLOYMENT)
