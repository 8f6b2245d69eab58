"""PostgreSQL + pgvector storage. `knowledge` is the only module that issues SQL."""

from .knowledge import (
    ACTIVATION_CHANNEL,
    Activation,
    ActivationRefused,
    ChunkRow,
    DocumentRow,
    EmbeddingSpace,
    Fusion,
    KnowledgeStore,
    PgvectorMissing,
    ProbePlan,
    ProbeQuery,
    RetrievedChunk,
    StoreError,
    TrafficSplit,
    VersionConflict,
    VersionRecord,
)

__all__ = [
    "ACTIVATION_CHANNEL",
    "Activation",
    "ActivationRefused",
    "ChunkRow",
    "DocumentRow",
    "EmbeddingSpace",
    "Fusion",
    "KnowledgeStore",
    "PgvectorMissing",
    "ProbePlan",
    "ProbeQuery",
    "RetrievedChunk",
    "StoreError",
    "TrafficSplit",
    "VersionConflict",
    "VersionRecord",
]
