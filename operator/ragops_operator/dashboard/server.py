"""The dashboard's local web server: reads the cluster through the user's kubeconfig, and Prometheus.

One page (`static/`, hand-written HTML, CSS and JavaScript served from the package: no CDN, no build
step) follows a server-sent event stream: the cluster's state every second and the charts every
five. The buttons post to `/api/deployments/{namespace}/{name}/{action}`, which requests the action
exactly as `kubectl ragops <action>` does (`plugin.request_action`: the annotation, then the
operator's record of it).

It serves on loopback only by default and, since it acts with the user's credentials, refuses
requests for another host name (a DNS-rebinding page) and state-changing requests without the
token the page was served with (a cross-site form). It must not decide anything about a rollout:
what to show is `view`, what an action does is the operator's.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..api.common import GROUP, VERSION, parse_duration
from ..kube import ALL_NAMESPACES, Kube, api_error_message
from ..plugin import ActionRefused, request_action
from ..prometheus import PrometheusClient, PrometheusUnavailable, RangeSeries, chart_queries
from ..reconcile.progressive import ACTION_ANNOTATION
from .view import ACTIONS, Json, build_snapshot, chart_rate_window, chart_series, chart_step

API_VERSION = f"{GROUP}/{VERSION}"
STATE_SECONDS = 1.0
"""How often the stream re-reads the cluster (the page is live within this, plus the operator's pass)."""
CHART_SECONDS = 5.0
RANGES = ("5m", "15m", "1h", "6h", "24h")
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
ACTION_WAIT_SECONDS = 30.0
TOKEN_HEADER = "X-Ragops-Token"


@dataclass
class ClusterSource:
    """Where the dashboard reads from: one namespace (or all) through a Kube client, and Prometheus."""

    kube: Kube
    namespace: str
    """A namespace, or ALL_NAMESPACES."""
    prometheus_url: str | None = None
    """Overrides each RagDeployment's spec.monitoring.prometheusUrl (e.g. a port-forward)."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _http: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)

    async def snapshot(self) -> Json:
        """The page's state now. Without RagDeployments to read (403, an unreachable apiserver) it is the
        API's refusal in `error`; without versions or Events, the rest with the refusal in `warnings`."""
        reads = await asyncio.gather(
            self.kube.list(API_VERSION, "RagDeployment", self.namespace),
            self.kube.list(API_VERSION, "KnowledgeBaseVersion", self.namespace),
            self.kube.list("v1", "Event", self.namespace, fields={"involvedObject.kind": "RagDeployment"}),
            return_exceptions=True,
        )
        problems = {
            what: api_error_message(result) or f"{type(result).__name__}: {result}"
            for what, result in zip(("RagDeployments", "KnowledgeBaseVersions", "Events"), reads, strict=True)
            if isinstance(result, Exception)
        }
        for result in reads:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
        deployments, versions, events = (result if isinstance(result, list) else [] for result in reads)
        if "RagDeployments" in problems:
            return {
                "generatedAt": self.clock().isoformat(),
                "error": f"reading RagDeployments failed: {problems['RagDeployments']}",
            }
        snapshot = build_snapshot(deployments, versions, events, self.clock())
        snapshot["warnings"] = [f"reading {what} failed: {message}" for what, message in problems.items()]
        return snapshot

    async def charts(self, state: Json, span: timedelta) -> Json:
        """Per deployment ("namespace/name"): its charts' lines over the last `span`, or why there are none."""
        now = self.clock().timestamp()
        step = chart_step(span)
        cards = state.get("deployments") or []
        results = await asyncio.gather(*(self._deployment_charts(card, span, step, now) for card in cards))
        return {
            "span": span.total_seconds(),
            "end": now,
            "deployments": {card["key"]: result for card, result in zip(cards, results, strict=True)},
        }

    async def _deployment_charts(self, card: Json, span: timedelta, step: timedelta, now: float) -> Json:
        url = self.prometheus_url or card.get("prometheusUrl")
        if not url:
            return {
                "error": "no Prometheus: the RagDeployment has no spec.monitoring.prometheusUrl "
                "(or start the dashboard with --prometheus-url)"
            }
        queries = chart_queries(card["namespace"], card["name"], chart_rate_window(step))
        client = PrometheusClient(url, client=self._http)
        start = now - span.total_seconds()
        try:
            answers = await asyncio.gather(
                *(client.range(q, start=start, end=now, step=step.total_seconds()) for q in queries.values())
            )
        except PrometheusUnavailable as error:
            return {"url": url, "error": str(error)}
        results: dict[str, list[RangeSeries]] = dict(zip(queries, answers, strict=True))
        return {"url": url, "series": chart_series(results), "limits": card["slo"]["limits"]}

    async def act(self, namespace: str, name: str, action: str) -> Json:
        result = await request_action(
            self.kube, namespace, name, {ACTION_ANNOTATION: action}, wait=True, wait_seconds=ACTION_WAIT_SECONDS
        )
        return {"ok": not result.ignored, "message": result.describe(name), "record": result.record}

    async def close(self) -> None:
        await self._http.aclose()
        await self.kube.close()


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def create_app(source: ClusterSource, *, token: str, hosts: list[str]) -> Starlette:
    """The dashboard's routes over `source`; `token` guards the actions, `hosts` the Host header."""
    page = resources.files(__package__).joinpath("static", "index.html").read_text()

    async def index(request: Request) -> Response:
        html = page.replace("{{token}}", token).replace("{{ranges}}", json.dumps(RANGES))
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return Response("not found", status_code=404)
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        return Response(body, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})

    async def state(request: Request) -> Response:
        return JSONResponse(await source.snapshot())

    def span_of(request: Request) -> timedelta:
        wanted = request.query_params.get("range", "1h")
        return parse_duration(wanted if wanted in RANGES else "1h")

    async def charts(request: Request) -> Response:
        return JSONResponse(await source.charts(await source.snapshot(), span_of(request)))

    async def stream(request: Request) -> Response:
        span = span_of(request)

        async def events() -> AsyncIterator[bytes]:
            sent: Json | None = None
            charted = 0.0
            while not await request.is_disconnected():
                snapshot = await source.snapshot()
                comparable = {k: v for k, v in snapshot.items() if k != "generatedAt"}
                if comparable != sent:
                    yield _sse("state", snapshot)
                    sent = comparable
                else:
                    yield b": alive\n\n"  # keeps proxies and the browser from timing the stream out
                if time.monotonic() - charted >= CHART_SECONDS and "deployments" in snapshot:
                    charted = time.monotonic()
                    yield _sse("charts", await source.charts(snapshot, span))
                await asyncio.sleep(STATE_SECONDS)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    async def act(request: Request) -> Response:
        if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), token):
            return JSONResponse({"ok": False, "message": "missing or wrong dashboard token"}, status_code=403)
        namespace, name, action = (request.path_params[k] for k in ("namespace", "name", "action"))
        if action not in ACTIONS:
            return JSONResponse(
                {"ok": False, "message": f"unknown action {action!r}: one of {', '.join(ACTIONS)}"}, status_code=400
            )
        try:
            return JSONResponse(await source.act(namespace, name, action))
        except ActionRefused as error:
            return JSONResponse({"ok": False, "message": str(error)}, status_code=409)
        except Exception as error:
            message = api_error_message(error)
            if message is None:
                raise
            # The apiserver's own status (403: your RBAC may not patch it) when it gave one.
            code = int(message[:3]) if message[:3].isdigit() and 400 <= int(message[:3]) < 600 else 502
            return JSONResponse({"ok": False, "message": message}, status_code=code)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/static/{name}", asset),
            Route("/api/state", state),
            Route("/api/charts", charts),
            Route("/api/stream", stream),
            Route("/api/deployments/{namespace}/{name}/{action}", act, methods=["POST"]),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
    )


def bind(address: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it back from getsockname)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


async def serve(
    kube: Kube,
    namespace: str | None,
    *,
    address: str,
    port: int,
    prometheus_url: str | None,
    announce: Callable[[str], None],
) -> None:
    """Serves the dashboard until cancelled; `namespace` None reads every namespace."""
    source = ClusterSource(kube, namespace or ALL_NAMESPACES, prometheus_url)
    hosts = sorted({"127.0.0.1", "localhost", "::1", address})
    app = create_app(source, token=secrets.token_urlsafe(24), hosts=hosts)
    sock = bind(address, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    announce(url_of(sock))
    try:
        await server.serve(sockets=[sock])
    finally:
        await source.close()
