"""OpenAI chat requests to questions, answers to OpenAI's shapes: the pure part of openai_api.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ragops_runtime.generation.prompt import Turn
from ragops_runtime.openai_api import ChatCompletionRequest, OpenAIError, completion, passages_text, to_question
from ragops_runtime.protection.identity import ClientIdentity
from ragops_runtime.service import Answer
from ragops_runtime.store.knowledge import RetrievedChunk


def request(*messages: dict[str, Any], **more: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "docs", "messages": list(messages), **more})


def test_the_last_user_message_is_the_query_and_the_rest_the_conversation() -> None:
    question = to_question(
        request(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello", "refusal": None},
            {"role": "tool", "content": "{}", "tool_call_id": "x"},
            {"role": "developer", "content": "Cite sources."},
            {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "E07?"}]},
            temperature=0.2,
            ragops={"retrieval_only": True, "top_k": 4, "filters": {"team": "docs"}},
        ),
        ClientIdentity(trusted="10.0.0.7", label="client-1"),
        2000,
    )
    assert question.query == "What is\nE07?"
    assert (question.client.trusted, question.client.sticky_key) == ("10.0.0.7", "client-1")
    assert question.history == (Turn("user", "Hi"), Turn("assistant", "Hello"))
    assert question.instructions == "Be brief.\n\nCite sources."
    assert (question.retrieval_only, question.top_k, dict(question.filters)) == (True, 4, {"team": "docs"})


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        ([{"role": "assistant", "content": "Hi"}], "invalid_messages"),
        ([{"role": "user", "content": "   "}], "empty_query"),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "unsupported_content"),
        ([{"role": "user", "content": "x" * 101}, {"role": "user", "content": "q"}], "conversation_too_long"),
        ([{"role": "user", "content": "a\u0000"}], "invalid_query"),
    ],
)
def test_requests_the_pipeline_cannot_answer_are_400_naming_why(messages: list[dict[str, Any]], code: str) -> None:
    with pytest.raises(OpenAIError) as refused:
        to_question(request(*messages), ClientIdentity(trusted="10.0.0.7"), 10)
    assert (refused.value.status, refused.value.code, refused.value.type) == (400, code, "invalid_request_error")


def answer(text: str | None, chunks: tuple[RetrievedChunk, ...], degraded: str | None = None) -> Answer:
    return Answer(
        query_id=uuid.UUID(int=7),
        knowledge_base="sample",
        kb_version="v2",
        answer=text,
        mode="generated" if text else "retrieval_only",
        degraded_reason=degraded,
        chunks=chunks,
        input_tokens=120 if text else 0,
        output_tokens=30 if text else 0,
        cost_usd=0.0008 if text else 0.0,
        timings_ms={"total": 12.5},
        role="canary",
    )


CHUNK = RetrievedChunk(
    chunk_id=9,
    document_id="a.md",
    source="a.md",
    position=0,
    heading_path=("Guide", "Brakes"),
    text=" Pads wear. ",
    score=0.5,
)


def test_a_completion_in_openai_shape_with_the_extension() -> None:
    body = completion(answer("Pads wear [1].", (CHUNK,)), "docs", 1700000000)
    assert body["id"] == f"chatcmpl-{uuid.UUID(int=7).hex}" and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Pads wear [1]."
    assert body["usage"] == {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150, "cost": 0.0008}
    extension = body["ragops"]
    assert (extension["kb_version"], extension["role"], extension["mode"]) == ("v2", "canary", "generated")
    assert extension["citations"] == [
        {
            "index": 1,
            "id": 9,
            "document_id": "a.md",
            "source": "a.md",
            "heading_path": ["Guide", "Brakes"],
            "score": 0.5,
            "text": " Pads wear. ",
        }
    ]


def test_without_generation_the_passages_are_the_answer_and_say_why() -> None:
    assert passages_text(answer(None, (CHUNK,))) == "Retrieved passages:\n\n[1] a.md — Guide > Brakes\nPads wear."
    degraded = passages_text(answer(None, (CHUNK,), "generation timeout: slow"))
    assert degraded.startswith("Retrieved passages (no generated answer: generation timeout: slow):")
    assert passages_text(answer(None, ())) == "No passage of sample/v2 matches this question."
