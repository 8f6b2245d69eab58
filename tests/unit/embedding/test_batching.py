"""embed_all: batches, bounded concurrency, order, progress, fail-fast and stats, against real embedders."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from ragops_runtime.embedding import EmbeddingError, EmbeddingStats, HashingEmbedder, OpenAIEmbedder, embed_all
from tests.support.openai_embeddings import FakeOpenAIEmbeddings, Reply, running_openai_embeddings_server

DIMENSIONS = 8
TEXTS = [f"passage number {n}" for n in range(10)]


@pytest.fixture
def server() -> Iterator[FakeOpenAIEmbeddings]:
    with running_openai_embeddings_server(DIMENSIONS) as fake:
        yield fake


@pytest.fixture
async def embedder(server: FakeOpenAIEmbeddings) -> AsyncIterator[OpenAIEmbedder]:
    client = OpenAIEmbedder(server.url, "m", DIMENSIONS, None, backoff_base=0.001)
    yield client
    await client.aclose()


def expected(texts: list[str]) -> list[list[float]]:
    return [FakeOpenAIEmbeddings.vector_for(text, DIMENSIONS) for text in texts]


async def test_order_is_kept_when_batches_finish_out_of_order(
    server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder
) -> None:
    # The first requests to arrive are answered last.
    server.script(Reply.slow(0.3), Reply.slow(0.2), Reply.slow(0.1))
    vectors, stats = await embed_all(embedder, TEXTS, batch_size=3, concurrency=3)

    assert vectors == expected(TEXTS)
    assert stats == EmbeddingStats(requests=4, texts=10, retries=0)
    assert server.completed[:3] != sorted(server.completed[:3]), "the replies were meant to arrive out of order"
    assert sorted(tuple(request.inputs) for request in server.requests) == sorted(
        tuple(TEXTS[start : start + 3]) for start in range(0, 10, 3)
    )


async def test_at_most_concurrency_batches_are_in_flight(
    server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder
) -> None:
    server.script(*[Reply.slow(0.05)] * 10)
    vectors, stats = await embed_all(embedder, TEXTS, batch_size=1, concurrency=2)
    assert vectors == expected(TEXTS)
    assert stats.requests == 10
    assert server.max_in_flight == 2


async def test_progress_reports_each_batch_and_sums_to_the_total(embedder: OpenAIEmbedder) -> None:
    progress: list[int] = []
    await embed_all(embedder, TEXTS, batch_size=4, concurrency=2, on_progress=progress.append)
    assert sorted(progress) == [2, 4, 4]
    assert sum(progress) == len(TEXTS)


async def test_stats_count_requests_texts_and_retries(server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder) -> None:
    server.script(Reply.rate_limited(), Reply.server_error(502))
    vectors, stats = await embed_all(embedder, TEXTS, batch_size=5, concurrency=1)
    assert vectors == expected(TEXTS)
    assert stats == EmbeddingStats(requests=2, texts=10, retries=2)
    assert len(server.requests) == 4

    # Retries are counted per call, not since the embedder was built.
    _, again = await embed_all(embedder, TEXTS, batch_size=5, concurrency=1)
    assert again == EmbeddingStats(requests=2, texts=10, retries=0)


async def test_the_first_error_cancels_the_batches_in_flight(
    server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder
) -> None:
    server.script(Reply.slow(10.0), Reply.error(400, "input is too long"), *[Reply.slow(10.0)] * 8)
    progress: list[int] = []
    started = time.monotonic()
    with pytest.raises(EmbeddingError, match="HTTP 400: input is too long"):
        await embed_all(embedder, TEXTS, batch_size=1, concurrency=2, on_progress=progress.append)

    # Raised as soon as the 400 arrived, without waiting for the slow batch or starting the other eight.
    assert time.monotonic() - started < 5.0
    assert len(server.requests) == 2
    assert progress == []


async def test_the_hashing_embedder_goes_through_the_same_path() -> None:
    embedder = HashingEmbedder(32)
    vectors, stats = await embed_all(embedder, TEXTS, batch_size=3)
    assert vectors == [embedder.embed_one(text) for text in TEXTS]
    assert stats == EmbeddingStats(requests=4, texts=10, retries=0)


async def test_nothing_to_embed_sends_nothing(server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder) -> None:
    progress: list[int] = []
    assert await embed_all(embedder, [], batch_size=8, on_progress=progress.append) == ([], EmbeddingStats())
    assert server.requests == []
    assert progress == []


class _ShortChanging(HashingEmbedder):
    """An embedder that breaks the contract by dropping the last vector of every batch."""

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(text) for text in texts[:-1]]


async def test_a_batch_with_missing_vectors_is_an_error_not_a_misalignment() -> None:
    with pytest.raises(EmbeddingError, match="returned 2 vectors for a batch of 3 texts"):
        await embed_all(_ShortChanging(8), TEXTS, batch_size=3)


@pytest.mark.parametrize(("batch_size", "concurrency", "complaint"), [(0, 1, "batch_size"), (1, 0, "concurrency")])
async def test_sizes_below_one_are_refused(batch_size: int, concurrency: int, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        await embed_all(HashingEmbedder(8), TEXTS, batch_size=batch_size, concurrency=concurrency)
