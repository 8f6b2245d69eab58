"""The operator's probe and metrics endpoint: /healthz, /readyz, /metrics on every replica.

Served from start-up on, before the Lease is won, so standby replicas pass their probes instead of
being restarted for waiting; the body says which role the replica has. Kopf's own liveness
endpoint starts only after start-up handlers finish, which for a standby is never.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import OperatorMetrics


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


class HealthServer:
    def __init__(self, address: str, metrics: OperatorMetrics, role: Callable[[], str]) -> None:
        self._host, self._port = parse_address(address)
        self._metrics, self._role = metrics, role
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._ok)
        app.router.add_get("/readyz", self._ok)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _ok(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "role": self._role()})

    async def _metrics_page(self, _: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self._metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
