"""Operator start-up: settings into Kopf's memo, annotation prefixes, peering, one Kubernetes client."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from ..kube import Kube
from ..settings import OperatorSettings


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorSettings()
    # Kopf's bookkeeping lives in annotations under our own prefix, never in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="ragops.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="ragops.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "ragops.dev/finalizer"
    settings.peering.name = config.peering
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.networking.request_timeout = 30
    memo.config = config
    memo.kube = Kube.from_environment()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    kube = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()
