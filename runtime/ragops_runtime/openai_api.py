"""The OpenAI-compatible face of the runtime: POST /v1/chat/completions and GET /v1/models.

Clients built for OpenAI's API (the `openai` SDKs, LangChain's ChatOpenAI, LlamaIndex, gateways)
talk to a RagDeployment unchanged: the model is the RagDeployment's name, the last user message is
the question, earlier turns are the conversation generation continues, system and developer
messages are added after the grounding rules. Answers come from the same pipeline as /v1/query
(service.py: limits, cache, rollout version choice, fallbacks, metrics, answer log), so this module
only translates, as app.py does for ragops' own API.

What OpenAI's shape cannot say travels in the extension field `ragops` (snake_case, like the rest
of OpenAI's wire format): the query id to rate with /v1/feedback, the knowledge-base version and
role that answered, the mode, whether and why the answer is degraded, the citations, cost and
timings. The version, role and query id are also headers (X-RagOps-KB-Version, X-RagOps-Role,
X-RagOps-Query-Id). `usage` has OpenAI's token counts plus `cost` in USD. Errors have OpenAI's
shape `{"error": {"message", "type", "param", "code"}}`: 400 invalid request, 401 bad key,
404 unknown model, 429 rate limited and 503 unavailable, both with Retry-After.

Sampling parameters (temperature, max_tokens, ...) are accepted and ignored: generation uses the
RagDeployment's spec.generation. A request asks for the retrieved passages without generation
with `"ragops": {"retrieval_only": true}`; a deployment without a generator always answers so.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from .generation.prompt import Turn
from .observability.tracing import remote_parent
from .protection.identity import ClientIdentity
from .service import (
    Answer,
    QueryService,
    QueryTooLong,
    Question,
    RateLimited,
    Retrieved,
    ServiceUnavailable,
)
from .settings import RuntimeSettings
from .store import RetrievedChunk
from .wire import Filters

log = logging.getLogger("ragops.runtime.openai")

CONVERSATION_FACTOR = 10
"""Earlier turns and instructions together may be this many times the query limit."""

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"


def chat_body_bytes(max_query_chars: int) -> int:
    """Largest chat completions body (413 above it, before parsing): the question and its conversation.

    As RuntimeSettings.max_body_bytes: 12 bytes a character (an escaped surrogate pair), and 16 KiB
    for the other fields and the JSON of each message.
    """
    return max(65_536, 12 * (CONVERSATION_FACTOR + 1) * max_query_chars + 16_384)


# ---- request -----------------------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    # Extra fields (name, tool_calls, refusal ...) are what clients echo back from earlier answers.
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class RagopsOptions(BaseModel):
    """The request's extension field `ragops` (with the openai SDK: `extra_body={"ragops": {...}}`)."""

    model_config = ConfigDict(extra="forbid")
    retrieval_only: bool = Field(default=False, description="Answer with the retrieved passages, no generation.")
    top_k: int | None = Field(default=None, ge=1, le=200, description="Candidates to retrieve.")
    filters: Filters = Field(default_factory=dict)


class ChatCompletionRequest(BaseModel):
    # Unknown fields are OpenAI parameters this server does not use: accepted and ignored, as vLLM does.
    model_config = ConfigDict(extra="allow")
    model: str = Field(description="The RagDeployment's name (GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice is generated.")
    ragops: RagopsOptions = Field(default_factory=RagopsOptions)


# ---- errors ------------------------------------------------------------------------------------


ErrorType = Literal[
    "invalid_request_error", "authentication_error", "not_found_error", "rate_limit_error", "server_error"
]


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        type_: ErrorType,
        code: str,
        message: str,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(max(1, math.ceil(self.retry_after)))} if self.retry_after is not None else None
        if self.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(status_code=self.status, content=self.body(), headers=headers)


def _service_error(exc: Exception) -> OpenAIError:
    if isinstance(exc, QueryTooLong):
        return OpenAIError(400, "invalid_request_error", "query_too_long", f"the last user message: {exc}", "messages")
    if isinstance(exc, RateLimited):
        return OpenAIError(429, "rate_limit_error", "rate_limit_exceeded", str(exc), retry_after=exc.retry_after)
    assert isinstance(exc, ServiceUnavailable)
    return OpenAIError(503, "server_error", exc.code, str(exc), retry_after=exc.retry_after)


def _validation_error(error: ValidationError | RequestValidationError) -> OpenAIError:
    first = error.errors()[0]
    param = ".".join(str(part) for part in first["loc"] if part != "body") or None
    return OpenAIError(400, "invalid_request_error", "invalid_request", f"{param or 'body'}: {first['msg']}", param)


class OpenAIRoute(APIRoute):
    """Refuses an invalid body with OpenAI's 400 and error shape, not the runtime's own 422."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response: Response = await handler(request)
            except RequestValidationError as error:
                return _validation_error(error).response()
            except HTTPException as error:
                if error.status_code != 400:
                    raise
                # FastAPI's answer to a body it could not decode (not UTF-8), in OpenAI's shape.
                return OpenAIError(
                    400, "invalid_request_error", "invalid_json", "body: not valid JSON (not UTF-8, or unreadable)"
                ).response()
            return response

        return handle


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape, which its SDKs turn into their exceptions."""

    error: ErrorDetail


# ---- translation -------------------------------------------------------------------------------


def _text(message: ChatMessage, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise OpenAIError(
                400,
                "invalid_request_error",
                "unsupported_content",
                f"messages[{index}]: only text content is supported, got a {part.type!r} part",
                f"messages.{index}.content",
            )
        texts.append(part.text)
    return "\n".join(texts)


def to_question(body: ChatCompletionRequest, client: ClientIdentity, max_query_chars: int) -> Question:
    """The last message is the question; user and assistant turns before it are the conversation."""
    *earlier, last = body.messages
    if last.role != "user":
        raise OpenAIError(
            400,
            "invalid_request_error",
            "invalid_messages",
            f"the last message must be the user's question, got role {last.role!r}",
            "messages",
        )
    query = _text(last, len(body.messages) - 1)
    if not query.strip():
        raise OpenAIError(400, "invalid_request_error", "empty_query", "the last user message is empty", "messages")
    if "\x00" in query:
        raise OpenAIError(400, "invalid_request_error", "invalid_query", "the query contains a NUL", "messages")
    instructions: list[str] = []
    history: list[Turn] = []
    for index, message in enumerate(earlier):
        text = _text(message, index)
        if message.role in ("system", "developer"):
            instructions.append(text)
        elif message.role in ("user", "assistant"):
            history.append(Turn(message.role, text))
        # Tool and function results answer tool calls this server never makes: nothing to continue.
    size = sum(len(text) for text in instructions) + sum(len(turn.content) for turn in history)
    if size > CONVERSATION_FACTOR * max_query_chars:
        raise OpenAIError(
            400,
            "invalid_request_error",
            "conversation_too_long",
            f"the earlier messages hold {size} characters; the limit is {CONVERSATION_FACTOR * max_query_chars} "
            f"({CONVERSATION_FACTOR} x RAGOPS_MAX_QUERY_CHARS)",
            "messages",
        )
    return Question(
        query=query,
        client=client,
        top_k=body.ragops.top_k,
        filters=body.ragops.filters,
        history=tuple(history),
        instructions="\n\n".join(text for text in instructions if text.strip()) or None,
        retrieval_only=body.ragops.retrieval_only,
    )


def citations(chunks: tuple[RetrievedChunk, ...]) -> list[dict[str, Any]]:
    """Passage [n] of the answer is citations[n - 1]."""
    return [
        {
            "index": number,
            "id": chunk.chunk_id,
            "document_id": chunk.document_id,
            "source": chunk.source,
            "heading_path": list(chunk.heading_path),
            "score": chunk.score,
            "text": chunk.text,
        }
        for number, chunk in enumerate(chunks, start=1)
    ]


def passages_text(answer: Answer) -> str:
    """The message content of an answer without generation: the retrieved passages, numbered as cited."""
    if not answer.chunks:
        return f"No passage of {answer.knowledge_base}/{answer.kb_version} matches this question."
    why = f" (no generated answer: {answer.degraded_reason})" if answer.degraded_reason else ""
    blocks = []
    for number, chunk in enumerate(answer.chunks, start=1):
        section = " > ".join(heading for heading in chunk.heading_path if heading.strip())
        head = f"[{number}] {chunk.source}" + (f" — {section}" if section else "")
        blocks.append(f"{head}\n{chunk.text.strip()}")
    return f"Retrieved passages{why}:\n\n" + "\n\n".join(blocks)


def extension(answer: Answer) -> dict[str, Any]:
    return {
        "query_id": str(answer.query_id),
        "knowledge_base": answer.knowledge_base,
        "kb_version": answer.kb_version,
        "role": answer.role,
        "mode": answer.mode,
        "degraded": answer.degraded,
        "degraded_reason": answer.degraded_reason,
        "citations": citations(answer.chunks),
        "cost_usd": answer.cost_usd,
        "timings_ms": {stage: round(ms, 3) for stage, ms in answer.timings_ms.items()},
    }


def usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
        "cost": answer.cost_usd,
    }


def finish_reason(answer: Answer) -> str:
    """OpenAI's name for why the answer ended: `length` when the model hit its token limit."""
    if answer.stop_reason == "max_tokens":
        return "length"
    if answer.stop_reason == "refusal":
        return "content_filter"
    return "stop"


def completion(answer: Answer, model: str, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{answer.query_id.hex}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": answer.kb_version,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.answer or passages_text(answer), "refusal": None},
                "finish_reason": finish_reason(answer),
                "logprobs": None,
            }
        ],
        "usage": usage(answer),
        "ragops": extension(answer),
    }


def headers(kb_version: str, role: str, query_id: uuid.UUID) -> dict[str, str]:
    return {"X-RagOps-KB-Version": kb_version, "X-RagOps-Role": role, "X-RagOps-Query-Id": str(query_id)}


async def completion_chunks(
    events: AsyncIterator[tuple[str, Any]], model: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    """The service's events as OpenAI chunks: role first, content deltas, the finish, usage, [DONE]."""
    chunk_id = ""
    sent_content = False

    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> bytes:
        data: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **more,
        }
        if include_usage:
            data.setdefault("usage", None)
        return _event(data)

    try:
        async for kind, payload in events:
            if kind == "retrieval":
                head: Retrieved | Answer = payload
                query_id = head.query_id
                chunk_id = f"chatcmpl-{query_id.hex}"
                version = head.record.version if isinstance(head, Retrieved) else head.kb_version
                served = {
                    "query_id": str(query_id),
                    "kb_version": version,
                    "role": head.role,
                    "citations": citations(head.chunks),
                }
                yield chunk({"role": "assistant", "content": ""}, system_fingerprint=version, ragops=served)
            elif kind == "delta":
                sent_content = True
                yield chunk({"content": payload})
            else:
                answer: Answer = payload
                if answer.answer is None:
                    # No generation, or it failed: the passages are the answer (after what was streamed).
                    yield chunk({"content": ("\n\n" if sent_content else "") + passages_text(answer)})
                yield chunk({}, finish_reason(answer), ragops=extension(answer))
                if include_usage:
                    yield _event(
                        {
                            "id": chunk_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": usage(answer),
                        }
                    )
    except Exception as error:  # the status line is gone: the failure can only be told in the stream
        log.exception("chat completion stream failed")
        yield _event(OpenAIError(500, "server_error", "stream_failed", f"the answer broke off: {error}").body())
    yield b"data: [DONE]\n\n"


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


# ---- routes ------------------------------------------------------------------------------------


def openai_router(settings: RuntimeSettings, client_of: Callable[[Request], ClientIdentity]) -> APIRouter:
    """The routes; `client_of` gives the caller identity /v1/query uses (rate limit on `trusted`,
    version stickiness on `sticky_key`)."""
    router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
    model_id = settings.deployment
    keys = [key.strip() for key in (settings.api_keys.get_secret_value() if settings.api_keys else "").split(",")]
    keys = [key for key in keys if key]
    started = int(time.time())

    def authenticate(request: Request) -> None:
        if not keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Every key is compared, in constant time, so the time taken tells nothing about a key.
        matched = [hmac.compare_digest(token.strip().encode(), key.encode()) for key in keys]
        if scheme.lower() != "bearer" or not any(matched):
            raise OpenAIError(
                401,
                "authentication_error",
                "invalid_api_key",
                "missing or wrong API key: send Authorization: Bearer <key>",
            )

    def model_card() -> dict[str, Any]:
        return {
            "id": model_id,
            "object": "model",
            "created": started,
            "owned_by": "ragops",
            "ragops": {"knowledge_base": settings.knowledge_base, "namespace": settings.namespace},
        }

    def check_model(model: str, param: str | None) -> None:
        if model != model_id:
            raise OpenAIError(
                404,
                "invalid_request_error",
                "model_not_found",
                f"the model {model!r} does not exist; this endpoint serves {model_id!r}",
                param,
            )

    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "Invalid request (the last message is not the user's, ...)."},
        401: {"model": ErrorBody, "description": "Missing or wrong API key (when keys are configured)."},
        404: {"model": ErrorBody, "description": "No such model: the model is the RagDeployment's name."},
        413: {"model": ErrorBody, "description": "The body is over its limit (room for the longest conversation)."},
        429: {"model": ErrorBody, "description": "Rate limit exceeded; see Retry-After."},
        503: {
            "model": ErrorBody,
            "description": "A dependency is unavailable or the replica saturated; see Retry-After.",
        },
    }

    @router.get("/models", responses={401: errors[401]})
    async def list_models(request: Request) -> Response:
        """One model: this RagDeployment."""
        try:
            authenticate(request)
        except OpenAIError as error:
            return error.response()
        return JSONResponse({"object": "list", "data": [model_card()]})

    @router.get("/models/{model}", responses={401: errors[401], 404: errors[404]})
    async def get_model(model: str, request: Request) -> Response:
        try:
            authenticate(request)
            check_model(model, "model")
        except OpenAIError as error:
            return error.response()
        return JSONResponse(model_card())

    @router.post(
        "/chat/completions",
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "A chat completion, or chunks when streaming."},
            **errors,
        },
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """Answer the last user message from the knowledge base, with the conversation before it."""
        created = int(time.time())
        try:
            authenticate(request)
            check_model(body.model, "model")
            question = to_question(body, client_of(request), settings.max_query_chars)
            service: QueryService = request.app.state.service
            try:
                with remote_parent(request.headers):
                    if body.stream:
                        head, events = await service.stream(question)
                    else:
                        answer = await service.answer(question)
                if body.stream:
                    version = head.record.version if isinstance(head, Retrieved) else head.kb_version
                    include_usage = bool(body.stream_options and body.stream_options.include_usage)
                    return StreamingResponse(
                        completion_chunks(events, model_id, created, include_usage),
                        media_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", **headers(version, head.role, head.query_id)},
                    )
            except (QueryTooLong, RateLimited, ServiceUnavailable) as error:
                raise _service_error(error) from None
        except OpenAIError as error:
            return error.response()
        return JSONResponse(
            completion(answer, model_id, created), headers=headers(answer.kb_version, answer.role, answer.query_id)
        )

    return router
