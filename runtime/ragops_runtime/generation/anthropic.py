"""Grounded answers from Anthropic's Messages API, inside the runtime's time budget.

Owns the call (through the official `anthropic` SDK), response validation and the backoff after
throttling, and nothing else: the prompt comes from `prompt`, cost from `pricing`, and what to tell
the user when generation is unavailable is the caller's decision (it answers retrieval-only). It
must not retry inside a request (the SDK runs with max_retries=0 and the whole call sits under one
deadline), must not call the API while a 429/529 backoff is running, and must never put the API key
in an exception message.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import anthropic
import pydantic
from anthropic.types import Message, MessageParam, RawMessageStreamEvent

from ragops_runtime.generation.prompt import Turn, build_prompt
from ragops_runtime.store.knowledge import RetrievedChunk

UnavailableReason = Literal[
    "timeout",
    "rate_limited",
    "overloaded",
    "upstream_error",
    "connection_error",
    "malformed_response",
    "backing_off",
]

DEFAULT_BASE_URL = "https://api.anthropic.com"
# Backoff after a 429/529 that names no Retry-After: 5 s, doubling while throttling continues.
DEFAULT_BACKOFF_SECONDS = 5.0
# Also caps a Retry-After: one probe a minute is not hammering, and an odd header can't switch generation
# off for hours.
MAX_BACKOFF_SECONDS = 60.0
_ERROR_TEXT_LIMIT = 500


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Generation:
    text: str
    usage: Usage
    model: str
    """The model id the API reports having used (may be a dated id for an alias)."""
    stop_reason: str | None


class GenerationUnavailable(Exception):
    """No answer could be generated; the caller answers retrieval-only and reports `reason`.

    `detail` is for operators and logs and never contains the API key. `retry_after` is set for
    "rate_limited", "overloaded" and "backing_off": seconds until the generator calls the API again.
    """

    def __init__(self, reason: UnavailableReason, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: UnavailableReason = reason
        self.detail = detail
        self.retry_after = retry_after


class _Usage(pydantic.BaseModel):
    input_tokens: pydantic.NonNegativeInt
    output_tokens: pydantic.NonNegativeInt


class _Block(pydantic.BaseModel):
    type: str
    text: str | None = None

    @pydantic.model_validator(mode="after")
    def _text_blocks_have_text(self) -> _Block:
        if self.type == "text" and self.text is None:
            raise ValueError("a text block without text")
        return self


class _Message(pydantic.BaseModel):
    """The fields of a Messages API reply this module relies on; the SDK itself does not validate replies."""

    model: str
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage


class _MessageStart(pydantic.BaseModel):
    message: _Message


class _BlockStart(pydantic.BaseModel):
    index: int
    content_block: _Block


class _Delta(pydantic.BaseModel):
    type: str
    text: str | None = None


class _BlockDelta(pydantic.BaseModel):
    index: int
    delta: _Delta


class _StopDelta(pydantic.BaseModel):
    stop_reason: str | None = None


class _DeltaUsage(pydantic.BaseModel):
    output_tokens: pydantic.NonNegativeInt
    # Newer API versions repeat cumulative input counts here; older ones leave them out.
    input_tokens: pydantic.NonNegativeInt | None = None


class _MessageDelta(pydantic.BaseModel):
    delta: _StopDelta
    usage: _DeltaUsage


class AnthropicGenerator:
    """Answers a question from retrieved passages with one Messages API call, within `timeout_seconds`.

    `generate` returns the whole answer; `stream` yields text deltas as they arrive and then one
    `Generation`. Every failure raises `GenerationUnavailable`. After a 429 or 529 the generator
    refuses to call the API ("backing_off") until the server's Retry-After has passed, or 5 s
    doubling per further throttled answer when it names none (at most 60 s); a success resets this.
    `clock` (monotonic seconds) times the backoff only; the deadline uses the event loop's clock.
    """

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        max_tokens: int,
        timeout_seconds: float,
        base_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_key:
            raise ValueError("an Anthropic API key is required")
        if not model:
            raise ValueError("a model id such as claude-sonnet-4-6 is required")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if not (math.isfinite(timeout_seconds) and timeout_seconds > 0):
            raise ValueError(f"timeout_seconds must be a positive number of seconds, got {timeout_seconds}")
        self.model = model
        self.max_tokens = max_tokens
        self.timeout_seconds = timeout_seconds
        self._api_key = api_key
        self._clock = clock
        # Passed explicitly: left as None, the SDK would read ANTHROPIC_BASE_URL from the environment, and
        # the runtime takes its configuration from settings only.
        self._base_url = base_url or DEFAULT_BASE_URL
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=self._base_url, timeout=timeout_seconds, max_retries=0
        )
        self._blocked_until: float | None = None
        self._unannounced_throttles = 0

    async def generate(
        self,
        query: str,
        chunks: Sequence[RetrievedChunk],
        *,
        history: Sequence[Turn] = (),
        instructions: str | None = None,
    ) -> Generation:
        """The whole answer; `history` and `instructions` are the conversation around `query` (see build_prompt)."""
        self._refuse_while_backing_off()
        system, messages = build_prompt(query, chunks, history, instructions)
        try:
            async with asyncio.timeout(self.timeout_seconds):
                message = await self._client.messages.create(
                    model=self.model,
                    max_tokens=self.max_tokens,
                    system=system,
                    messages=cast("list[MessageParam]", messages),
                )
        except TimeoutError:
            raise self._timed_out() from None
        except anthropic.APIError as error:
            raise self._unavailable(error) from None
        except json.JSONDecodeError as error:
            # A 200 announced as JSON that isn't: the SDK lets the decoder's error through.
            raise self._malformed(f"the body is not valid JSON ({error})") from None
        generation = self._generation(message)
        self._succeeded()
        return generation

    async def stream(
        self,
        query: str,
        chunks: Sequence[RetrievedChunk],
        *,
        history: Sequence[Turn] = (),
        instructions: str | None = None,
    ) -> AsyncGenerator[str | Generation, None]:
        """Text deltas as the API sends them, then exactly one `Generation` with the full text and usage.

        A failure after some deltas raises `GenerationUnavailable` like any other: the deltas already
        yielded are an incomplete answer, and the caller decides what to tell the user. A caller that
        stops early should `aclose()` the generator (contextlib.aclosing), which closes the connection.
        """
        self._refuse_while_backing_off()
        system, messages = build_prompt(query, chunks, history, instructions)
        # One deadline for the whole stream, checked around every wait on the API and never across a
        # `yield`: a consumer's own awaits must not be cancelled by the generator's budget.
        deadline = asyncio.get_running_loop().time() + self.timeout_seconds
        try:
            async with asyncio.timeout_at(deadline):
                events = await self._client.messages.create(
                    model=self.model,
                    max_tokens=self.max_tokens,
                    system=system,
                    messages=cast("list[MessageParam]", messages),
                    stream=True,
                )
        except TimeoutError:
            raise self._timed_out() from None
        except anthropic.APIError as error:
            raise self._unavailable(error) from None
        answer = _StreamedAnswer()
        try:
            while not answer.stopped:
                event = await self._next_event(events, deadline, answer)
                if event is None:
                    break
                piece = self._apply(answer, event)
                if piece:
                    yield piece
        finally:
            await events.close()
        generation = self._finished(answer)
        # Before the final yield: a consumer may stop iterating once it has the Generation.
        self._succeeded()
        yield generation

    async def aclose(self) -> None:
        await self._client.close()

    async def _next_event(
        self, events: anthropic.AsyncStream[RawMessageStreamEvent], deadline: float, answer: _StreamedAnswer
    ) -> RawMessageStreamEvent | None:
        """The next event, or None at the end of the stream; every failure becomes GenerationUnavailable."""
        try:
            async with asyncio.timeout_at(deadline):
                return await anext(events)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise self._timed_out(answer) from None
        except anthropic.APIError as error:
            # An `error` event in the stream (overloaded, rate limited, ...) arrives as a status error.
            raise self._unavailable(error, answer) from None
        except json.JSONDecodeError as error:
            raise self._malformed(f"an event's data is not valid JSON ({error}){answer.so_far}") from None
        except Exception as error:
            # Anything else the SDK lets through while reading the body comes from its HTTP library
            # (a connection cut mid-stream, a broken chunked encoding); that library is not ours to import.
            raise GenerationUnavailable(
                "connection_error",
                f"the connection to the Anthropic API broke mid-stream: {self._describe(error)}{answer.so_far}",
            ) from None

    def _apply(self, answer: _StreamedAnswer, event: RawMessageStreamEvent) -> str | None:
        """Fold one event into `answer`; the text it adds, if any."""
        data: Any = event.to_dict() if isinstance(event, anthropic.BaseModel) else event
        kind = data.get("type") if isinstance(data, dict) else None
        try:
            if kind == "message_start":
                start = _MessageStart.model_validate(data)
                answer.model = start.message.model
                answer.input_tokens = start.message.usage.input_tokens
                answer.output_tokens = start.message.usage.output_tokens
            elif kind == "content_block_start":
                block = _BlockStart.model_validate(data).content_block
                answer.block_types.append(block.type)
                if block.type == "text" and block.text:
                    return answer.add(block.text)
            elif kind == "content_block_delta":
                delta = _BlockDelta.model_validate(data).delta
                if delta.type == "text_delta":
                    if delta.text is None:
                        raise ValueError("a text_delta without text")
                    return answer.add(delta.text)
            elif kind == "message_delta":
                update = _MessageDelta.model_validate(data)
                answer.stop_reason = update.delta.stop_reason
                answer.output_tokens = update.usage.output_tokens
                if update.usage.input_tokens is not None:
                    answer.input_tokens = update.usage.input_tokens
            elif kind == "message_stop":
                answer.stopped = True
            # Other events (content_block_stop, and types newer than this module) carry nothing it needs.
        except (pydantic.ValidationError, ValueError) as error:
            raise self._malformed(f"{kind or 'untyped'} event: {_first_error(error)}{answer.so_far}") from None
        return None

    def _finished(self, answer: _StreamedAnswer) -> Generation:
        if not answer.stopped:
            raise self._malformed(f"the stream ended before message_stop{answer.so_far}")
        if answer.model is None or answer.input_tokens is None or answer.output_tokens is None:
            raise self._malformed("the stream had no message_start")
        if "text" not in answer.block_types:
            raise self._malformed(f"no text content block (got {', '.join(answer.block_types) or 'none'})")
        return Generation(
            text="".join(answer.pieces),
            usage=Usage(answer.input_tokens, answer.output_tokens),
            model=answer.model,
            stop_reason=answer.stop_reason,
        )

    def _generation(self, message: object) -> Generation:
        # The SDK hands back the raw text when a 200 isn't JSON, and builds a Message from any JSON
        # without checking it; both must become "malformed_response", not an AttributeError later on.
        if not isinstance(message, Message):
            raise self._malformed(f"the body is not a message (got {type(message).__name__})")
        try:
            parsed = _Message.model_validate(message.to_dict())
        except pydantic.ValidationError as error:
            raise self._malformed(_first_error(error)) from None
        texts = [block.text for block in parsed.content if block.type == "text" and block.text is not None]
        if not texts:
            kinds = ", ".join(block.type for block in parsed.content) or "none"
            raise self._malformed(f"no text content block (got {kinds})")
        return Generation(
            text="".join(texts),
            usage=Usage(parsed.usage.input_tokens, parsed.usage.output_tokens),
            model=parsed.model,
            stop_reason=parsed.stop_reason,
        )

    def _refuse_while_backing_off(self) -> None:
        if self._blocked_until is None:
            return
        remaining = self._blocked_until - self._clock()
        if remaining > 0:
            raise GenerationUnavailable(
                "backing_off",
                f"the Anthropic API asked us to slow down; not calling it for another {remaining:.1f}s",
                retry_after=remaining,
            )

    def _succeeded(self) -> None:
        self._blocked_until = None
        self._unannounced_throttles = 0

    def _throttled(self, retry_after_header: str | None) -> float:
        """Start (or extend) the backoff after a 429/529; the seconds it lasts."""
        wait = _seconds(retry_after_header)
        if wait is None:
            self._unannounced_throttles += 1
            wait = DEFAULT_BACKOFF_SECONDS * 2 ** min(self._unannounced_throttles - 1, 16)
        wait = min(wait, MAX_BACKOFF_SECONDS)
        until = self._clock() + wait
        # Concurrent requests throttled together must not shorten a backoff another one started.
        self._blocked_until = until if self._blocked_until is None else max(self._blocked_until, until)
        return wait

    def _unavailable(self, error: anthropic.APIError, answer: _StreamedAnswer | None = None) -> GenerationUnavailable:
        so_far = answer.so_far if answer else ""
        if isinstance(error, anthropic.APITimeoutError):
            return self._timed_out(answer)
        if isinstance(error, anthropic.APIConnectionError):
            return GenerationUnavailable(
                "connection_error", f"cannot reach the Anthropic API at {self._base_url}: {self._describe(error)}"
            )
        if not isinstance(error, anthropic.APIStatusError):
            return self._malformed(self._redact(_clip(error.message)))
        status = error.status_code
        kind = str(error.type) if error.type else "error"
        message = self._redact(_clip(error.api_message or _body_text(error.body)))
        # An error event inside a 200 stream carries the type but not the status of the failure.
        where = f"HTTP {status} {kind}" if status >= 400 else f"{kind} mid-stream"
        if status == 429 or kind == "rate_limit_error":
            wait = self._throttled(error.response.headers.get("retry-after"))
            return GenerationUnavailable(
                "rate_limited",
                f"the Anthropic API is rate limiting ({where}: {message}){so_far}; backing off for {wait:g}s",
                retry_after=wait,
            )
        if status == 529 or kind == "overloaded_error":
            wait = self._throttled(error.response.headers.get("retry-after"))
            return GenerationUnavailable(
                "overloaded",
                f"the Anthropic API is overloaded ({where}: {message}){so_far}; backing off for {wait:g}s",
                retry_after=wait,
            )
        return GenerationUnavailable(
            "upstream_error", f"the Anthropic API refused the request: {where}: {message}{so_far}"
        )

    def _timed_out(self, answer: _StreamedAnswer | None = None) -> GenerationUnavailable:
        so_far = answer.so_far if answer else ""
        return GenerationUnavailable(
            "timeout", f"no complete answer from the Anthropic API within {self.timeout_seconds:g}s{so_far}"
        )

    def _malformed(self, what: str) -> GenerationUnavailable:
        return GenerationUnavailable("malformed_response", f"the Anthropic API sent an unusable reply: {what}")

    def _describe(self, error: BaseException) -> str:
        # The SDK's connection errors say only "Connection error."; the cause says which.
        cause = error.__cause__ or error.__context__
        parts = [f"{type(error).__name__}: {error}".rstrip(": ")]
        if cause is not None and str(cause) not in str(error):
            parts.append(f"{type(cause).__name__}: {cause}".rstrip(": "))
        return self._redact(_clip(" <- ".join(parts)))

    def _redact(self, text: str) -> str:
        # Servers and proxies echo the credentials they reject; whatever they say passes through here.
        return text.replace(self._api_key, "[redacted]")


class _StreamedAnswer:
    """What a stream has told so far."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.block_types: list[str] = []
        self.model: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.stopped = False

    def add(self, text: str) -> str:
        self.pieces.append(text)
        return text

    @property
    def so_far(self) -> str:
        count = len(self.pieces)
        return f" (after {count} text delta{'' if count == 1 else 's'})" if count else ""


def _seconds(header: str | None) -> float | None:
    """Retry-After as seconds, or None when absent or not a number (Anthropic sends delta-seconds)."""
    if header is None:
        return None
    try:
        value = float(header)
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def _first_error(error: Exception) -> str:
    if isinstance(error, pydantic.ValidationError):
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "body"
        return f"{location}: {first['msg']}"
    return str(error)


def _body_text(body: object) -> str:
    if body is None:
        return "no details"
    return body if isinstance(body, str) else json.dumps(body, default=str)


def _clip(text: str) -> str:
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + "..."
