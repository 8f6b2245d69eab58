"""Embedding a whole corpus: fixed-size batches, bounded concurrency, input order kept, first failure wins.

Knows nothing about providers or HTTP; it drives any `Embedder`. It must not retry (the embedder
does, per request) and must not return a partial result: one failed batch fails the whole call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from ragops_runtime.embedding.base import Embedder, EmbeddingError, EmbeddingStats


async def embed_all(
    embedder: Embedder,
    texts: Sequence[str],
    *,
    batch_size: int,
    concurrency: int = 4,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[list[float]], EmbeddingStats]:
    """Embed `texts` in batches of `batch_size`, at most `concurrency` batches in flight.

    Returns one vector per text, in input order, and the stats of this call. `on_progress` is
    called after each batch with the number of texts it embedded. The first `EmbeddingError`
    cancels the batches in flight and is raised as is (not wrapped in an ExceptionGroup).

    `stats.retries` is the growth of `embedder.retries` during the call, so concurrent calls
    sharing one embedder each count the other's retries too.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")

    stats = EmbeddingStats(texts=len(texts))
    retries_before = embedder.retries
    vectors: list[list[float]] = [[] for _ in texts]
    # A fixed pool of workers draining one shared iterator bounds the tasks (and the memory) to
    # `concurrency`, however large the corpus.
    starts = iter(range(0, len(texts), batch_size))

    async def worker() -> None:
        for start in starts:
            batch = texts[start : start + batch_size]
            embedded = await embedder.embed_batch(batch)
            if len(embedded) != len(batch):
                raise EmbeddingError(
                    f"{embedder.provider} embedder (model {embedder.model}) returned {len(embedded)} vectors "
                    f"for a batch of {len(batch)} texts"
                )
            vectors[start : start + len(batch)] = embedded
            stats.requests += 1
            if on_progress is not None:
                on_progress(len(batch))

    workers = min(concurrency, -(-len(texts) // batch_size))
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
    except ExceptionGroup as failures:
        # Callers handle EmbeddingError, not the TaskGroup's wrapping of it. Several errors only
        # happen when batches fail in the same instant; the first is raised, all stay in its cause.
        first = failures.exceptions[0]
        if len(failures.exceptions) == 1:
            raise first from None
        embedding_errors = [error for error in failures.exceptions if isinstance(error, EmbeddingError)]
        if embedding_errors:
            raise embedding_errors[0] from failures
        raise

    stats.retries = embedder.retries - retries_before
    return vectors, stats
