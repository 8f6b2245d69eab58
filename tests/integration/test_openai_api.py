"""The OpenAI-compatible API of a real `ragops serve`, driven by the official `openai` SDK and LangChain.

No hand-written HTTP: what these clients send and parse is what users' applications send and
parse. Generation goes through the Anthropic double (the one allowed double), retrieval through
real PostgreSQL + pgvector.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import SecretStr

from tests.integration.test_runtime import QUESTION, publish
from tests.support.anthropic_messages import DEFAULT_API_KEY, FakeAnthropic, Reply, running_anthropic_server
from tests.support.ragops_serve import fresh_database, ragops_serve
from tests.support.readme import readme_snippet

API_KEY = "rk-test-openai-compat"
MODEL = "docs"


class Served:
    def __init__(self, url: str, fake: FakeAnthropic, dsn: str) -> None:
        self.url = url
        self.fake = fake
        self.dsn = dsn

    def client(self, api_key: str = API_KEY) -> openai.OpenAI:
        # max_retries=0: an error must reach the test as the SDK raises it, not after retries.
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=30)


SETTINGS = {
    "RAGOPS_KNOWLEDGE_BASE": "sample",
    "RAGOPS_DEPLOYMENT": MODEL,
    "RAGOPS_NAMESPACE": "test",
    "RAGOPS_GENERATION_PROVIDER": "anthropic",
    "RAGOPS_ANTHROPIC_API_KEY": DEFAULT_API_KEY,
}


@pytest.fixture(scope="module")
def published_sample(postgres_server: str) -> Iterator[str]:
    """A database with the sample KB's v1 built, gated and active, for the module."""
    with fresh_database(postgres_server, "openai_api") as dsn:
        asyncio.run(publish(dsn, "v1"))
        yield dsn


@pytest.fixture(scope="module")
def served(published_sample: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `ragops serve` for the module, generating through the Anthropic double, with two API keys."""
    log = tmp_path_factory.mktemp("openai-api") / "serve.log"
    with running_anthropic_server() as fake:
        settings = {
            **SETTINGS,
            "RAGOPS_API_KEYS": f"rk-other,{API_KEY}",
            "RAGOPS_REQUESTS_PER_MINUTE_PER_CLIENT": "1000",
            "RAGOPS_ANTHROPIC_BASE_URL": fake.url,
        }
        with ragops_serve(published_sample, settings, log) as url:
            yield Served(url, fake, published_sample)


def test_models_lists_the_rag_deployment(served: Served) -> None:
    client = served.client()
    assert [model.id for model in client.models.list()] == [MODEL]
    model = client.models.retrieve(MODEL)
    assert (model.id, model.owned_by) == (MODEL, "ragops")
    assert model.model_extra is not None and model.model_extra["ragops"]["knowledge_base"] == "sample"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_a_conversation_is_answered_with_citations_version_usage_and_cost(served: Served) -> None:
    client = served.client()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": "My e-bike display shows a code."},
            {"role": "assistant", "content": "Which code does it show?"},
            {"role": "user", "content": QUESTION},
        ],
    )
    assert raw.headers["x-ragops-kb-version"] == "v1" and raw.headers["x-ragops-role"] == "stable"
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == MODEL
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content is not None and "[1]" in choice.message.content
    assert completion.system_fingerprint == "v1"

    extension: dict[str, Any] = (completion.model_extra or {})["ragops"]
    assert (extension["kb_version"], extension["role"], extension["mode"], extension["degraded"]) == (
        "v1",
        "stable",
        "generated",
        False,
    )
    assert raw.headers["x-ragops-query-id"] == extension["query_id"]
    assert extension["citations"][0]["document_id"] == "batteries/error-codes.md"
    assert extension["citations"][0]["index"] == 1

    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # The default price table's claude-sonnet-4-6: $3 / $15 per million tokens.
    expected = (usage.prompt_tokens * 3 + usage.completion_tokens * 15) / 1e6
    assert (usage.model_extra or {})["cost"] == pytest.approx(expected)
    assert extension["cost_usd"] == pytest.approx(expected)

    # The earlier turns reached generation as conversation, the system message after the rules.
    request = served.fake.requests[-1]
    messages = request.body["messages"]
    assert [message["role"] for message in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "My e-bike display shows a code."
    assert messages[1]["content"] == "Which code does it show?"
    assert "[1]" in messages[2]["content"] and messages[2]["content"].endswith(f"Question: {QUESTION}")
    assert request.system.endswith("Answer in one sentence.") and "only" in request.system.lower()

    # The query id rates the answer like a /v1/query one: it is in the answer log.
    with psycopg.connect(served.dsn) as connection:
        row = connection.execute(
            "SELECT version, mode FROM ragops.answer_log WHERE query_id = %s", (extension["query_id"],)
        ).fetchone()
    assert row == ("v1", "generated")


def test_streaming_sends_openai_chunks_with_the_extension_and_usage(served: Served) -> None:
    client = served.client()
    question = "How long is the frame warranty?"
    before = len(served.fake.requests)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": question}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert served.fake.requests[before].streaming
    first, *middle, finish, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant"
    served_by = (first.model_extra or {})["ragops"]
    assert served_by["kb_version"] == "v1" and served_by["citations"][0]["document_id"].startswith("warranty/")
    text = "".join(chunk.choices[0].delta.content or "" for chunk in middle)
    assert len(middle) >= 2 and "[1]" in text
    assert finish.choices[0].finish_reason == "stop"
    summary = (finish.model_extra or {})["ragops"]
    assert summary["mode"] == "generated" and summary["query_id"] == served_by["query_id"]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None and usage_chunk.usage.completion_tokens > 0
    assert {chunk.id for chunk in chunks} == {f"chatcmpl-{uuid.UUID(served_by['query_id']).hex}"}

    # Asked again, the same question is answered from the cache, streamed as one delta.
    again = list(
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}], stream=True)
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in again if chunk.choices) == text
    assert (again[-1].model_extra or {})["ragops"]["mode"] == "cached"


def test_an_answer_cut_at_the_token_limit_finishes_with_length(served: Served) -> None:
    # Longer than the deployment's 500 output tokens: the API cuts it off and says max_tokens.
    client = served.client()
    served.fake.script(Reply.answer("The frame warranty covers the frame [1]. " * 80))
    cut = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me all about the frame warranty."}]
    )
    assert cut.choices[0].finish_reason == "length"
    served.fake.script(Reply.answer("The frame warranty covers the frame [1]. " * 80))
    streamed = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Everything on the frame warranty?"}], stream=True
        )
    )
    assert [chunk.choices[0].finish_reason for chunk in streamed if chunk.choices][-1] == "length"


def test_retrieval_only_mode_answers_with_the_passages(served: Served) -> None:
    client = served.client()
    before = len(served.fake.requests)
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"ragops": {"retrieval_only": True, "top_k": 3}},
    )
    assert len(served.fake.requests) == before  # no generation
    content = completion.choices[0].message.content or ""
    extension = (completion.model_extra or {})["ragops"]
    assert extension["mode"] == "retrieval_only" and not extension["degraded"]
    first = extension["citations"][0]
    assert first["document_id"] == "batteries/error-codes.md"
    assert content.startswith(f"Retrieved passages:\n\n[1] {first['source']} — ")
    assert len(re.findall(r"^\[\d\] ", content, re.MULTILINE)) == len(extension["citations"]) <= 3
    assert completion.usage is not None and completion.usage.total_tokens == 0

    streamed = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"ragops": {"retrieval_only": True, "top_k": 3}},
        stream=True,
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == content


def test_errors_have_openai_shape_and_status(served: Served) -> None:
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        served.client("wrong-key").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert unauthorized.value.status_code == 401 and unauthorized.value.code == "invalid_api_key"
    assert unauthorized.value.type == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        served.client("wrong-key").models.list()

    client = served.client()
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"
    with pytest.raises(openai.BadRequestError) as last:
        client.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "hello"}])
    assert last.value.code == "invalid_messages" and last.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as image:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}
            ],
        )
    assert image.value.code == "unsupported_content"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 2001}])
    assert too_long.value.code == "query_too_long"
    with pytest.raises(openai.BadRequestError) as many:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2)
    assert many.value.param == "n"
    with pytest.raises(openai.BadRequestError) as extension:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"ragops": {"top_k": 0}}
        )
    assert extension.value.param == "ragops.top_k"


def test_an_oversized_body_is_413_in_openai_shape_and_a_long_conversation_is_not(served: Served) -> None:
    client = served.client()
    # RAGOPS_MAX_QUERY_CHARS=2000: earlier turns may hold 10 x 2000 characters (here 19,000 outside the
    # BMP, over 64 KiB however encoded: more than the body limit of /v1/query), the body room for them.
    turns: list[ChatCompletionMessageParam] = []
    for _ in range(5):
        turns.append({"role": "user", "content": "\U0001d11e" * 1900})
        turns.append({"role": "assistant", "content": "\U0001d11e" * 1900})
    long = client.chat.completions.create(model=MODEL, messages=[*turns, {"role": "user", "content": QUESTION}])
    assert long.choices[0].message.content
    with pytest.raises(openai.APIStatusError) as oversized:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"padding": "x" * 400_000}
        )
    assert oversized.value.status_code == 413 and oversized.value.code == "body_too_large"
    assert oversized.value.type == "invalid_request_error"
    assert set(oversized.value.response.json()["error"]) == {"message", "type", "param", "code"}


def test_langchain_chat_openai_invokes_and_streams(served: Served) -> None:
    # The fields' own names (the documented aliases are base_url, api_key and model), for mypy.
    chat = ChatOpenAI(
        openai_api_base=f"{served.url}/v1", openai_api_key=SecretStr(API_KEY), model_name=MODEL, max_retries=0
    )
    conversation = [
        SystemMessage("Answer briefly."),
        HumanMessage("My e-bike display shows a code."),
        AIMessage("Which code does it show?"),
        HumanMessage("It shows E07. What does error code E07 on the display mean?"),
    ]
    reply = chat.invoke(conversation)
    assert isinstance(reply.content, str) and "[1]" in reply.content
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0
    assert reply.response_metadata["model_name"] == MODEL
    assert [m["role"] for m in served.fake.requests[-1].body["messages"]] == ["user", "assistant", "user"]

    pieces = [chunk.content for chunk in chat.stream([HumanMessage("How do I adjust the brakes?")])]
    streamed = "".join(piece for piece in pieces if isinstance(piece, str))
    assert len(pieces) >= 3 and "[1]" in streamed


def test_rate_limited_and_saturated_are_429_and_503_with_retry_after(published_sample: str, tmp_path: Path) -> None:
    with running_anthropic_server() as fake:
        settings = {
            **SETTINGS,
            "RAGOPS_ANTHROPIC_BASE_URL": fake.url,
            "RAGOPS_REQUESTS_PER_MINUTE_PER_CLIENT": "2",
            "RAGOPS_MAX_CONCURRENT_REQUESTS": "1",
            "RAGOPS_CACHE_TTL_SECONDS": "0",
            "RAGOPS_TRUSTED_CLIENT_HEADER": "X-Forwarded-For",
        }
        with ragops_serve(published_sample, settings, tmp_path / "serve.log") as url:

            def client(name: str, label: str | None = None) -> openai.OpenAI:
                # The trusted header (as an ingress sets it) keys the rate limit; X-Client-Id only sticks a version.
                headers = {"X-Forwarded-For": f"spoofed, {name}", "X-Client-Id": label or name}
                return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, default_headers=headers)

            ask: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]
            limited = client("a")
            limited.chat.completions.create(model=MODEL, messages=ask)
            limited.chat.completions.create(model=MODEL, messages=ask)
            with pytest.raises(openai.RateLimitError) as too_many:
                limited.chat.completions.create(model=MODEL, messages=ask)
            assert too_many.value.code == "rate_limit_exceeded"
            assert int(too_many.value.response.headers["retry-after"]) >= 1
            with pytest.raises(openai.RateLimitError):
                client("a", label="a-new-client-id").chat.completions.create(model=MODEL, messages=ask)

            fake.script(Reply.slow(3.0))
            with ThreadPoolExecutor(1) as pool:
                slow = pool.submit(lambda: client("b").chat.completions.create(model=MODEL, messages=ask))
                time.sleep(1.0)
                with pytest.raises(openai.InternalServerError) as busy:
                    client("c").chat.completions.create(model=MODEL, messages=ask)
                assert busy.value.status_code == 503 and busy.value.code == "saturated"
                assert busy.value.type == "server_error" and busy.value.response.headers["retry-after"] == "1"
                assert slow.result().choices[0].message.content


@pytest.mark.parametrize("name", ["openai-sdk", "langchain"])
def test_the_readme_snippets_run_against_a_real_runtime(
    served: Served, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The snippets as printed, pointed at this runtime and its key.
    code = readme_snippet(name).replace("http://localhost:8080", served.url).replace('"my-key"', repr(API_KEY))
    exec(compile(code, f"README.md:{name}", "exec"), {})
    printed = capsys.readouterr().out
    assert "[1]" in printed
    if name == "openai-sdk":
        assert "v1 stable [" in printed and " USD" in printed and "Retrieved passages:\n\n[1] " in printed
