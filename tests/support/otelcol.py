"""A real OpenTelemetry Collector (built by `make tools` from its Go module) that receives spans for the tests.

It listens for OTLP/HTTP on a free loopback port and writes what it receives, as OTLP JSON lines,
to a file the test reads back (`Collector.spans`): the runtime's exporter is checked against the
receiver production uses, not against a reimplementation of the protocol.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.http_double import free_port

OTELCOL = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "otelcol"


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    """0 unset, 1 ok, 2 error (OTLP's StatusCode)."""
    resource: dict[str, Any]
    scope: str


class Collector:
    def __init__(self, endpoint: str, output: Path) -> None:
        self.endpoint = endpoint
        self.output = output

    def spans(self) -> list[ReceivedSpan]:
        if not self.output.exists():
            return []
        received = []
        for line in self.output.read_text().splitlines():
            if not line.strip():
                continue
            for resource_spans in json.loads(line).get("resourceSpans", []):
                resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
                for scope_spans in resource_spans.get("scopeSpans", []):
                    scope = scope_spans.get("scope", {}).get("name", "")
                    for span in scope_spans.get("spans", []):
                        received.append(
                            ReceivedSpan(
                                trace_id=span["traceId"],
                                span_id=span["spanId"],
                                parent_span_id=span.get("parentSpanId", ""),
                                name=span["name"],
                                kind=span.get("kind", 0),
                                start_ns=int(span["startTimeUnixNano"]),
                                end_ns=int(span["endTimeUnixNano"]),
                                attributes=_attributes(span.get("attributes", [])),
                                status_code=span.get("status", {}).get("code", 0),
                                resource=resource,
                                scope=scope,
                            )
                        )
        return received

    def wait_for(self, count: int, timeout: float = 20.0) -> list[ReceivedSpan]:
        """The spans received once there are at least `count` (the exporter batches every second)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if len(spans) >= count:
                return spans
            assert time.monotonic() < deadline, f"{len(spans)} spans after {timeout} s, expected {count}: " + ", ".join(
                f"{span.name} ({span.trace_id[:6]})" for span in spans
            )
            time.sleep(0.2)


def _attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items}


def _value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        return int(value["intValue"])  # OTLP JSON writes 64-bit integers as strings
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_value(item) for item in value["arrayValue"].get("values", [])]
    return None


@contextmanager
def running_collector(directory: Path) -> Iterator[Collector]:
    if not OTELCOL.exists():
        raise RuntimeError(f"{OTELCOL} is missing: run `make tools`")
    port = free_port()
    output = directory / "spans.jsonl"
    config = directory / "otelcol.yaml"
    # The collector's own metrics are off: their default port (8888) would collide between test runs.
    config.write_text(
        json.dumps(
            {
                "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
                "exporters": {"file": {"path": str(output), "flush_interval": "100ms"}},
                "service": {
                    "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
                },
            }
        )
    )
    log = (directory / "otelcol.log").open("wb")
    process = subprocess.Popen([str(OTELCOL), "--config", f"file:{config}"], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"otelcol exited: {(directory / 'otelcol.log').read_text()}")
            try:
                # An empty export is accepted once the receiver is up.
                if httpx.post(f"{endpoint}/v1/traces", json={"resourceSpans": []}, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "otelcol did not start in 30 s"
            time.sleep(0.1)
        yield Collector(endpoint, output)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
