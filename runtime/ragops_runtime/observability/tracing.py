"""OpenTelemetry traces of queries: one trace per query, one span per stage, exported over OTLP.

A query's root span (`invoke_workflow <deployment>`) carries the RagDeployment, knowledge base,
the version that answered, its role (stable, canary, shadow, probe), the mode and the token
counts; its children are the stages the query went through: `ragops.cache` (the answer-cache
lookup), `embeddings <model>`, `retrieval <kb>/<version>` (vector search, and in hybrid mode BM25
and the rank fusion, which run in the same SQL statement and so share one span), `ragops.rerank`
and `chat <model>` (generation). Names and attributes follow the OpenTelemetry GenAI semantic
conventions (`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
`gen_ai.usage.input_tokens`, `gen_ai.data_source.id` ...); what they do not cover is under `ragops.*`.

Tracing is off unless an OTLP endpoint is configured; then spans leave through a batch processor
with a bounded queue, exported by its own thread: a slow or absent collector drops spans, it never
delays a query. Parents are passed explicitly (`QueryTrace.stage`) instead of through the global
context, so streamed answers, whose generation outlives the request handler, keep their tree.
This module must not decide anything about a query: the service tells it what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

AttributeValue = str | bool | int | float | list[str]

SCOPE = "ragops_runtime"
EXPORT_TIMEOUT_SECONDS = 10.0
MAX_QUEUE_SIZE = 2048
"""Spans waiting for export; beyond it new spans are dropped (and counted by the SDK), never waited for."""
SCHEDULE_DELAY_MS = 1000
SHUTDOWN_SECONDS = 3.0
"""How long a stopping runtime waits for its last spans to leave; a stuck collector must not eat the grace period."""


@dataclass(frozen=True)
class TracingConfig:
    """Where spans go: `endpoint` is the collector's OTLP/HTTP base URL (…:4318), None turns tracing off."""

    endpoint: str | None
    sampling_ratio: float = 1.0
    namespace: str = "default"
    deployment: str = "ragops"
    pod: str = "local"


class Tracing:
    """The tracer of one runtime and the provider to flush at shutdown (none when tracing is off)."""

    def __init__(self, tracer: Tracer, provider: TracerProvider | None, *, deployment: str, knowledge_base: str):
        self.tracer = tracer
        self.provider = provider
        self.deployment = deployment
        self.knowledge_base = knowledge_base

    @classmethod
    def disabled(cls, deployment: str = "ragops", knowledge_base: str = "") -> Tracing:
        return cls(NoOpTracer(), None, deployment=deployment, knowledge_base=knowledge_base)

    @classmethod
    def from_config(cls, config: TracingConfig, *, knowledge_base: str) -> Tracing:
        if config.endpoint is None:
            return cls.disabled(config.deployment, knowledge_base)
        resource = Resource.create(
            {
                "service.name": "ragops-runtime",
                "service.namespace": config.namespace,
                "service.instance.id": config.pod,
                "k8s.namespace.name": config.namespace,
                "k8s.pod.name": config.pod,
                "ragops.deployment": config.deployment,
                "ragops.knowledge_base": knowledge_base,
            }
        )
        # Parent-based: a caller that sampled its own trace (traceparent header) is always followed.
        # shutdown_on_exit=False: the SDK's own atexit flush would wait on a stuck collector unbounded; see shutdown().
        provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(TraceIdRatioBased(config.sampling_ratio)),
            shutdown_on_exit=False,
        )
        exporter = OTLPSpanExporter(endpoint=traces_url(config.endpoint), timeout=EXPORT_TIMEOUT_SECONDS)
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=MAX_QUEUE_SIZE,
                schedule_delay_millis=SCHEDULE_DELAY_MS,
                export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000,
            )
        )
        return cls(provider.get_tracer(SCOPE), provider, deployment=config.deployment, knowledge_base=knowledge_base)

    def begin(self, role: str | None = None, parent: Context | None = None) -> QueryTrace:
        """The root span of one query; `role` when known now (shadow, probe), else set by `QueryTrace.served`."""
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": self.deployment,
            "ragops.deployment": self.deployment,
            "ragops.knowledge_base": self.knowledge_base,
        }
        if role is not None:
            attributes["ragops.role"] = role
        root = self.tracer.start_span(
            f"invoke_workflow {self.deployment}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )
        return QueryTrace(self.tracer, root)

    def shutdown(self, wait_seconds: float = SHUTDOWN_SECONDS) -> None:
        """Exports what is queued and stops, waiting at most `wait_seconds`: the rest is dropped.

        The flush runs in a daemon thread, since an export blocked on a collector that never answers
        cannot be interrupted; the process may exit while it still waits.
        """
        if self.provider is None:
            return
        flushing = threading.Thread(target=self.provider.shutdown, name="ragops-trace-shutdown", daemon=True)
        flushing.start()
        flushing.join(wait_seconds)


class QueryTrace:
    """The spans of one query, parented explicitly on its root."""

    def __init__(self, tracer: Tracer, root: Span) -> None:
        self.tracer = tracer
        self.root = root
        self._context = trace.set_span_in_context(root)
        self._ended = False

    @property
    def recording(self) -> bool:
        return self.root.is_recording()

    def served(self, *, kb: str, version: str, role: str) -> None:
        self.root.set_attributes(
            {"ragops.kb_version": version, "ragops.role": role, "gen_ai.data_source.id": f"{kb}/{version}"}
        )

    @contextlib.contextmanager
    def stage(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[Span]:
        """A child span of the root around one stage; an exception escaping it marks the span failed."""
        span = self.tracer.start_span(name, context=self._context, attributes=dict(attributes or {}))
        try:
            yield span
        except BaseException as error:
            fail(span, error)
            raise
        finally:
            span.end()

    def start_stage(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Span:
        """A child span the caller ends: for a stage that spans yields of a generator (streamed generation)."""
        return self.tracer.start_span(name, context=self._context, attributes=dict(attributes or {}))

    def end(self, attributes: Mapping[str, Any] | None = None, error: BaseException | None = None) -> None:
        """Ends the root once (later calls do nothing), with the query's outcome."""
        if self._ended:
            return
        self._ended = True
        if attributes:
            self.root.set_attributes({key: value for key, value in attributes.items() if value is not None})
        if error is not None:
            fail(self.root, error)
        self.root.end()


def fail(span: Span, error: BaseException, reason: str | None = None) -> None:
    """Marks a span failed the way the conventions say: `error.type` and an error status."""
    if isinstance(error, GeneratorExit | asyncio.CancelledError):
        reason = reason or "cancelled"  # the client hung up or the server is stopping
    span.set_attribute("error.type", reason or getattr(error, "code", None) or type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, str(error)[:500]))


def degrade(span: Span, reason: str) -> None:
    """A stage that failed and was replaced by a fallback: the span fails, the query does not."""
    span.set_attribute("error.type", reason)
    span.set_status(Status(StatusCode.ERROR, reason))


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is read."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


@contextlib.contextmanager
def remote_parent(headers: Mapping[str, str]) -> Iterator[None]:
    """Makes a caller's W3C `traceparent` the parent of the traces begun inside (an OpenLLMetry client's, say)."""
    token = otel_context.attach(TraceContextTextMapPropagator().extract(headers))
    try:
        yield
    finally:
        otel_context.detach(token)
