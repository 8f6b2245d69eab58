"""Serves a runtime app for real: uvicorn on 127.0.0.1 in a background thread, lifespan included,
configured as `ragops serve` configures it (ragops_runtime.server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from ragops_runtime.server import server_config
from tests.support.http_double import free_port


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Yields the base URL once the app has started; shuts it down (lifespan and all) on exit."""
    port = free_port()
    server = uvicorn.Server(server_config(app, app.state.settings, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, name="runtime-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the runtime did not start (see the log above)")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
