"""The ragops.dev/v1alpha1 API: pydantic models that are the single source of the CRD schemas.

Nothing here does I/O or imports Kopf or a Kubernetes client.
"""

from .common import API_VERSION, GROUP, VERSION, Condition, Rule, parse_duration
from .kinds import KINDS, KNOWLEDGE_BASE_VERSION, RAG_DEPLOYMENT, ResourceKind
from .knowledgebaseversion import KnowledgeBaseVersionSpec, KnowledgeBaseVersionStatus
from .ragdeployment import RagDeploymentSpec, RagDeploymentStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "KNOWLEDGE_BASE_VERSION",
    "RAG_DEPLOYMENT",
    "VERSION",
    "Condition",
    "KnowledgeBaseVersionSpec",
    "KnowledgeBaseVersionStatus",
    "RagDeploymentSpec",
    "RagDeploymentStatus",
    "ResourceKind",
    "Rule",
    "parse_duration",
]
