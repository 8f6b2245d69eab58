"""A process-backed kubelet for Job pods on the test control plane.

kwok makes the fake node's pods Ready without running them, which is right for the runtime's
Deployment and wrong for a build or eval Job: a test must not believe a build ran when nothing
did. So the stage file `tools/build.sh` assembles keeps kwok off every pod carrying the Job
controller's `batch.kubernetes.io/job-name` label, and `ProcessKubelet` takes exactly those
pods: it runs each one's container as a local process (the test venv's `ragops` standing in for
the image's) and writes the real outcome into the pod's status. The Job controller then marks
the Job Complete or Failed, with its backoff limit and pod failure policy, from what really ran.

What it does as a kubelet would: `$(VAR)` expansion in env values, command and args; env from
values, Secrets, ConfigMaps (`env` and `envFrom`) and the downward API's metadata fields;
ConfigMap, Secret, projected (the service-account token included), downwardAPI and emptyDir
volumes materialised in a scratch directory, with mount paths in
the spec's literal strings rewritten to it; a Pending -> Running -> Succeeded/Failed status with
the container's exit code; a missing Secret or ConfigMap holds the pod in Pending
(`CreateContainerConfigError`) and is retried; a deleted pod's process is stopped.

What it does not: images, users and security contexts, resource limits, probes, init or
sidecar containers, restarts in place (`restartPolicy: OnFailure`), PersistentVolumeClaim and
other volume types. A pod asking for one of these stays Pending with a `CreateContainerError`
saying why, and its run record carries the same error: never a failure the Job controller would
count, since that would pass for the operator's failure handling working.

Test infrastructure, not product code: no part of ragops imports it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.controlplane import ControlPlane, _die_with_parent

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""Set by the Job controller on every pod it creates; kwok's pod stages select pods without it."""

VENV_BIN = Path(sys.executable).parent
DEFAULT_EXECUTABLES: Mapping[str, str] = {"ragops": str(VENV_BIN / "ragops")}

PASSED_THROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
"""All a pod's process inherits from the test process: it sees what its spec gives it, so a test
cannot pass because the test's own RAGOPS_* variables leaked into the "container"."""

# The kubelet's FallbackToLogsOnError tail: at most 80 lines and 2048 bytes of the log.
MESSAGE_LINES = 80
MESSAGE_CHARS = 2048

Manifest = dict[str, Any]

SUPPORTED_VOLUMES = "configMap, secret, projected, downwardAPI and emptyDir volumes"


class UnsupportedPod(Exception):
    """The pod asks for something this harness cannot do; retrying will not help."""


class MissingReference(Exception):
    """A Secret, ConfigMap or key the pod needs does not exist (yet); the kubelet retries these."""


@dataclass(frozen=True)
class PodRun:
    """What happened to one Job pod. `exit_code` is None when its process never ran (see `error`)."""

    namespace: str
    pod: str
    job: str
    args: tuple[str, ...]
    """The argv that ran: command and args after `$(VAR)` expansion, path rewriting and executable mapping."""
    env: Mapping[str, str]
    """The container's environment as its spec and the overrides resolved it (not the passed-through host variables)."""
    exit_code: int | None
    stdout: str
    stderr: str
    error: str | None = None
    """Why the process did not run, or why it was stopped (deleted pod, timeout, kubelet stopped)."""


# ---- what Kubernetes would hand the container ---------------------------------------------------


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` escapes, anything else stays.

    A port of k8s.io/kubernetes third_party/forked/golang/expansion.Expand, so tests see the
    same command line a real kubelet would run (an undefined `$(X)` is passed on literally).
    """
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                out.append("$")
                advance = 1
            elif rest[0] == "(":
                closer = rest.find(")", 1)
                if closer == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = rest[1:closer]
                    out.append(variables.get(name, f"$({name})"))
                    advance = closer + 1
            else:
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def path_rewriter(mounts: Mapping[str, Path]) -> Callable[[str], str]:
    """Maps container paths under each mount path to the host directory standing in for the volume.

    A mount path is replaced only as a whole path prefix (`/golden` in `/golden/cases.yaml` or
    `--golden=/golden`, not in `/goldenrod` or `/var/golden`); deeper mounts win over shallower.
    """
    if not mounts:
        return lambda text: text
    targets = {path.rstrip("/"): str(host) for path, host in mounts.items()}
    alternatives = "|".join(re.escape(path) for path in sorted(targets, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./-])({alternatives})(?![\w.-])")
    return lambda text: pattern.sub(lambda match: targets[match.group(1)], text)


class _Objects:
    """Reads the Secrets and ConfigMaps one pod start needs, each once, as the kubelet would."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self._plane = plane
        self._namespace = namespace
        self._cache: dict[tuple[str, str], dict[str, bytes] | None] = {}

    def data(self, kind: str, name: str, *, optional: bool) -> dict[str, bytes]:
        """The object's keys and decoded values; {} when it is missing and `optional`."""
        key = (kind, name)
        if key not in self._cache:
            self._cache[key] = self._fetch(kind, name)
        found = self._cache[key]
        if found is None:
            if optional:
                return {}
            raise MissingReference(f'{kind} "{name}" not found')
        return found

    def value(self, kind: str, ref: Manifest) -> str | None:
        """A `secretKeyRef`/`configMapKeyRef` value; None when it is missing and optional."""
        optional = bool(ref.get("optional", False))
        data = self.data(kind, ref["name"], optional=optional)
        if ref["key"] not in data:
            if optional:
                return None
            key, name = ref["key"], ref["name"]
            raise MissingReference(f"couldn't find key {key} in {kind} {self._namespace}/{name}")
        return data[ref["key"]].decode()

    def token(self, pod: Manifest, projection: Manifest) -> str:
        """A real token for the pod's service account, as the kubelet's token projection requests one."""
        account = pod["spec"].get("serviceAccountName") or "default"
        seconds = max(int(projection.get("expirationSeconds", 3607)), 600)
        args = ["create", "token", account, "-n", self._namespace, f"--duration={seconds}s"]
        if projection.get("audience"):
            args.append(f"--audience={projection['audience']}")
        return self._plane.kubectl(*args).stdout.strip()

    def _fetch(self, kind: str, name: str) -> dict[str, bytes] | None:
        result = self._plane.kubectl(
            "get", kind.lower(), name, "-n", self._namespace, "-o", "json", "--ignore-not-found"
        )
        if not result.stdout.strip():
            return None
        document: Manifest = json.loads(result.stdout)
        encoded: dict[str, str] = dict(document.get("binaryData") or {})
        if kind == "Secret":
            encoded.update(document.get("data") or {})
            return {key: base64.b64decode(value) for key, value in encoded.items()}
        plain = {key: value.encode() for key, value in (document.get("data") or {}).items()}
        return {**{key: base64.b64decode(value) for key, value in encoded.items()}, **plain}


def _field_value(pod: Manifest, path: str) -> str:
    metadata: Manifest = pod["metadata"]
    simple = {
        "metadata.name": metadata["name"],
        "metadata.namespace": metadata["namespace"],
        "metadata.uid": metadata["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
    }
    if path in simple:
        return str(simple[path])
    keyed = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if keyed:
        return str((metadata.get(keyed.group(1)) or {}).get(keyed.group(2), ""))
    raise UnsupportedPod(f"fieldRef {path!r} is not supported (only metadata fields, nodeName, serviceAccountName)")


def resolve_env(pod: Manifest, container: Manifest, objects: _Objects, rewrite: Callable[[str], str]) -> dict[str, str]:
    """The container's environment in the kubelet's order: `envFrom`, then `env`, later names winning.

    Literal values are path-rewritten and expanded against the variables defined before them;
    values read from Secrets, ConfigMaps or the downward API are used verbatim (a test's DSN
    may name a socket directory under /tmp, which must reach the process unchanged).
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            kind, ref = "ConfigMap", source["configMapRef"]
        elif "secretRef" in source:
            kind, ref = "Secret", source["secretRef"]
        else:
            raise UnsupportedPod(f"envFrom {source!r} is not supported")
        for key, raw in objects.data(kind, ref["name"], optional=bool(ref.get("optional", False))).items():
            env[prefix + key] = raw.decode()
    for variable in container.get("env") or []:
        name = variable["name"]
        source = variable.get("valueFrom")
        if source is None:
            env[name] = expand(rewrite(variable.get("value", "")), env)
            continue
        value: str | None
        if "secretKeyRef" in source:
            value = objects.value("Secret", source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = objects.value("ConfigMap", source["configMapKeyRef"])
        elif "fieldRef" in source:
            value = _field_value(pod, source["fieldRef"]["fieldPath"])
        else:
            raise UnsupportedPod(f"env {name}: valueFrom {sorted(source)} is not supported")
        if value is not None:
            env[name] = value
    return env


def _project(directory: Path, data: Mapping[str, bytes], items: Sequence[Manifest] | None, what: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    selected = [(item["key"], item["path"]) for item in items] if items else [(key, key) for key in data]
    for key, relative in selected:
        if key not in data:
            raise MissingReference(f"{what} has no key {key!r}")
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        # Replaced whole, never rewritten in place: the pods of an Indexed Job share these files
        # (see `shared_volume_directory_name`), and one may be reading while another starts.
        written = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        written.write_bytes(data[key])
        os.replace(written, target)


def _project_sources(directory: Path, pod: Manifest, sources: Sequence[Manifest], objects: _Objects) -> None:
    """A projected (or downwardAPI) volume: every source's files in one directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if "configMap" in source:
            ref = source["configMap"]
            data = objects.data("ConfigMap", ref["name"], optional=bool(ref.get("optional", False)))
            _project(directory, data, ref.get("items"), f'ConfigMap "{ref["name"]}"')
        elif "secret" in source:
            ref = source["secret"]
            data = objects.data("Secret", ref["name"], optional=bool(ref.get("optional", False)))
            _project(directory, data, ref.get("items"), f'Secret "{ref["name"]}"')
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                if "fieldRef" not in item:
                    raise UnsupportedPod(f"downwardAPI item {item['path']!r}: only fieldRef is supported")
                value = _field_value(pod, item["fieldRef"]["fieldPath"]).encode()
                _project(directory, {item["path"]: value}, None, "downwardAPI")
        elif "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            _project(directory, {token["path"]: objects.token(pod, token).encode()}, None, "serviceAccountToken")
        else:
            raise UnsupportedPod(f"projected volume source {sorted(source)} is not supported")


COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def pod_directory_name(pod: Manifest) -> str:
    """The scratch directory of a pod's volumes: one per Job (and completion index), not per pod.

    A real kubelet gives every attempt of a Job the same container paths; paths rewritten into
    a per-pod directory would make a retried build's `--source` arguments differ from the first
    attempt's, and the store rightly refuses a version re-registered with other sources. The Job
    controller starts a replacement only once the failed pod is gone (podReplacementPolicy), so
    two attempts never share the directory at the same time.
    """
    metadata = pod["metadata"]
    job = (metadata.get("labels") or {}).get(JOB_NAME_LABEL)
    if not job:
        return f"{metadata['namespace']}.{metadata['name']}"
    index = (metadata.get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION)
    return f"{metadata['namespace']}.job.{job}" + (f".{index}" if index is not None else "")


def shared_volume_directory_name(pod: Manifest) -> str | None:
    """Where the ConfigMap and Secret volumes of an Indexed Job's pods go: one directory for every index.

    A real kubelet mounts a volume at the same container path in every pod of a Job, so the
    shards of a sharded build pass the same `--source` paths and register the same version; a
    per-index directory would give each shard other paths, which the store rightly refuses.
    Scratch (emptyDir, the working directory) stays per index.
    """
    metadata = pod["metadata"]
    job = (metadata.get("labels") or {}).get(JOB_NAME_LABEL)
    if not job or COMPLETION_INDEX_ANNOTATION not in (metadata.get("annotations") or {}):
        return None
    return f"{metadata['namespace']}.job.{job}.shared"


def materialize_volumes(
    pod: Manifest, container: Manifest, objects: _Objects, root: Path, *, shared: Path | None = None
) -> dict[str, Path]:
    """Fills a host directory per mounted volume; returns mount path -> host path.

    ConfigMaps and Secrets go under `shared` when given (see `shared_volume_directory_name`).
    """
    volumes: dict[str, Manifest] = {volume["name"]: volume for volume in pod["spec"].get("volumes") or []}
    prepared: dict[str, Path] = {}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        name, path = mount["name"], mount["mountPath"]
        if path.rstrip("/") == "":
            raise UnsupportedPod("a volume mounted at / is not supported")
        volume = volumes.get(name)
        if volume is None:
            raise UnsupportedPod(f"volumeMount {name!r} names no volume of the pod")
        if name not in prepared:
            directory = root / name
            if shared is not None and ("configMap" in volume or "secret" in volume):
                directory = shared / name
            if "configMap" in volume:
                source = volume["configMap"]
                data = objects.data("ConfigMap", source["name"], optional=bool(source.get("optional", False)))
                _project(directory, data, source.get("items"), f'ConfigMap "{source["name"]}"')
            elif "secret" in volume:
                source = volume["secret"]
                data = objects.data("Secret", source["secretName"], optional=bool(source.get("optional", False)))
                _project(directory, data, source.get("items"), f'Secret "{source["secretName"]}"')
            elif "projected" in volume:
                _project_sources(directory, pod, volume["projected"].get("sources") or [], objects)
            elif "downwardAPI" in volume:
                _project_sources(directory, pod, [{"downwardAPI": volume["downwardAPI"]}], objects)
            elif "emptyDir" in volume:
                directory.mkdir(parents=True)
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                raise UnsupportedPod(
                    f"volume {name!r}: PersistentVolumeClaim {claim!r} is not supported by ProcessKubelet "
                    f"(only {SUPPORTED_VOLUMES})"
                )
            else:
                kinds = sorted(set(volume) - {"name"})
                raise UnsupportedPod(f"volume {name!r}: {kinds} is not supported (only {SUPPORTED_VOLUMES})")
            prepared[name] = directory
        host = prepared[name] / mount["subPath"] if mount.get("subPath") else prepared[name]
        if not host.exists():
            host.mkdir(parents=True)
        mounts[path] = host
    return mounts


@dataclass(frozen=True)
class _Launch:
    args: list[str]
    env: dict[str, str]
    process_env: dict[str, str]
    cwd: Path


def prepare_launch(
    pod: Manifest,
    objects: _Objects,
    root: Path,
    executables: Mapping[str, str],
    overrides: Mapping[str, str],
) -> _Launch:
    """Everything needed to start the pod's container as a process, or why it cannot start."""
    spec: Manifest = pod["spec"]
    containers: list[Manifest] = spec.get("containers") or []
    if len(containers) != 1 or spec.get("initContainers"):
        raise UnsupportedPod("only pods with exactly one container and no init containers are supported")
    if spec.get("restartPolicy", "Always") != "Never":
        raise UnsupportedPod(f"restartPolicy {spec.get('restartPolicy')!r} is not supported (only Never)")
    container = containers[0]
    if not container.get("command"):
        raise UnsupportedPod("a container without `command` needs its image's entrypoint, which is unknown here")

    shutil.rmtree(root, ignore_errors=True)
    shared = shared_volume_directory_name(pod)
    mounts = materialize_volumes(
        pod, container, objects, root / "volumes", shared=root.parent / shared / "volumes" if shared else None
    )
    rewrite = path_rewriter(mounts)
    env = {**resolve_env(pod, container, objects, rewrite), **overrides}
    args = [expand(rewrite(word), env) for word in [*container["command"], *container.get("args", [])]]
    args[0] = executables.get(args[0], args[0])

    process_env = {name: os.environ[name] for name in PASSED_THROUGH_ENV if name in os.environ}
    process_env["PATH"] = os.pathsep.join([str(VENV_BIN), process_env.get("PATH", os.defpath)])
    process_env["HOSTNAME"] = pod["metadata"]["name"]
    if "/tmp" in mounts:
        process_env["TMPDIR"] = str(mounts["/tmp"])
    process_env.update(env)

    cwd = root / "workdir"
    cwd.mkdir(parents=True)
    working_dir = container.get("workingDir")
    if working_dir and (mapped := Path(rewrite(working_dir))).is_dir():
        cwd = mapped
    return _Launch(args=args, env=env, process_env=process_env, cwd=cwd)


# ---- pod status ---------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(pod: Manifest, now: str, **statuses: tuple[str, str | None]) -> list[Manifest]:
    """The pod's conditions with `type=(status, reason)` set, keeping the others (PodScheduled)."""
    current = {condition["type"]: condition for condition in pod.get("status", {}).get("conditions") or []}
    for kind, (status, reason) in statuses.items():
        previous = current.get(kind, {})
        changed = previous.get("status") != status
        condition: Manifest = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),
        }
        if reason:
            condition["reason"] = reason
        current[kind] = condition
    return list(current.values())


def _container_status(container: Manifest, state: Manifest, *, ready: bool, started: bool) -> Manifest:
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": ready,
        "started": started,
        "restartCount": 0,
        "state": state,
    }


def waiting_status(pod: Manifest, reason: str, message: str) -> Manifest:
    container = pod["spec"]["containers"][0]
    return {
        "phase": "Pending",
        "containerStatuses": [
            _container_status(
                container, {"waiting": {"reason": reason, "message": message}}, ready=False, started=False
            )
        ],
    }


def running_status(pod: Manifest, started_at: str) -> Manifest:
    container = pod["spec"]["containers"][0]
    true = ("True", None)
    return {
        "phase": "Running",
        "startTime": started_at,
        "conditions": _conditions(
            pod, started_at, PodReadyToStartContainers=true, Initialized=true, ContainersReady=true, Ready=true
        ),
        "containerStatuses": [
            _container_status(container, {"running": {"startedAt": started_at}}, ready=True, started=True)
        ],
    }


def terminated_status(pod: Manifest, started_at: str, exit_code: int, reason: str, message: str) -> Manifest:
    container = pod["spec"]["containers"][0]
    finished_at = _now()
    terminated: Manifest = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": started_at,
        "finishedAt": finished_at,
    }
    if message:
        terminated["message"] = message
    completed = ("False", "PodCompleted")
    return {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": _conditions(
            pod,
            finished_at,
            PodReadyToStartContainers=("False", None),
            Initialized=("True", None),
            ContainersReady=completed,
            Ready=completed,
        ),
        "containerStatuses": [_container_status(container, {"terminated": terminated}, ready=False, started=False)],
    }


def log_tail(text: str) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-MESSAGE_LINES:])[-MESSAGE_CHARS:]


# ---- the kubelet --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Worker:
    thread: threading.Thread
    cancel: threading.Event


class ProcessKubelet:
    """Runs the Job pods scheduled in `namespaces` as local processes; see the module docstring.

    Use as a context manager (or `start()` / `stop()`). `env` overrides the containers' own
    variables (pointing a provider's base URL at a test double, say); `executables` maps a
    container's command to a host program (`ragops` -> the test venv's by default); a process
    still running after `timeout` seconds is stopped (SIGTERM, then SIGKILL) and its pod fails
    with the signal's exit code (143 or 137), as a runtime would report it.
    """

    def __init__(
        self,
        plane: ControlPlane,
        namespaces: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        executables: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        poll_interval: float = 0.2,
    ) -> None:
        if not namespaces:
            raise ValueError("ProcessKubelet needs the namespaces whose Job pods it runs")
        self._plane = plane
        self._namespaces = tuple(namespaces)
        self._overrides = dict(env or {})
        self._executables = dict(DEFAULT_EXECUTABLES if executables is None else executables)
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._workers: dict[str, _Worker] = {}
        self._directories: dict[str, threading.Lock] = {}
        self._runs: list[PodRun] = []
        self._errors: list[str] = []
        self._poller: threading.Thread | None = None
        self._workdir: Path | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> ProcessKubelet:
        if self._poller is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="ragops-kubelet-"))
            self._poller = threading.Thread(target=self._poll_loop, name="process-kubelet", daemon=True)
            self._poller.start()
        return self

    def stop(self) -> None:
        """Stops watching, kills the processes still running (their pods are left as they are)."""
        self._stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.cancel.set()
            worker.thread.join(timeout=30)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> ProcessKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what tests read --------------------------------------------------------------------

    @property
    def runs(self) -> list[PodRun]:
        """Every pod this kubelet finished with (ran, refused or stopped), in that order."""
        with self._lock:
            return list(self._runs)

    @property
    def errors(self) -> list[str]:
        """Problems of the watch itself (a failed pod list or status patch); empty when all went well."""
        with self._lock:
            return list(self._errors)

    def report(self) -> str:
        """Every run so far, one paragraph each (exit code, why it stopped, the log's tail): for a failure message."""
        paragraphs = [
            f"{run.namespace}/{run.pod} (job {run.job}): exit {run.exit_code}"
            + (f", {run.error}" if run.error else "")
            + (f"\n{log_tail(run.stderr)}" if run.stderr else "")
            for run in self.runs
        ]
        return "\n".join([*paragraphs, *(f"kubelet: {error}" for error in self.errors)])

    def runs_of(self, job: str) -> list[PodRun]:
        return [run for run in self.runs if run.job == job]

    def wait_for_run(self, job: str, *, count: int = 1, timeout: float = 60.0) -> PodRun:
        """The `count`-th finished run of `job`'s pods, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs_of(job)
            if len(runs) >= count:
                return runs[count - 1]
            time.sleep(0.1)
        raise TimeoutError(
            f"no run #{count} of Job {job!r} after {timeout:.0f}s; runs: {self.runs}; errors: {self.errors}"
        )

    # ---- watching ---------------------------------------------------------------------------

    def _note(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)
            del self._errors[:-50]

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._poll()
            except Exception as error:  # keep watching: one bad answer must not stop every later pod
                self._note(f"poll: {error!r}")
            self._stopping.wait(self._poll_interval)

    def _list_job_pods(self) -> list[Manifest] | None:
        pods: list[Manifest] = []
        for namespace in self._namespaces:
            result = self._plane.kubectl(
                "get", "pods", "-n", namespace, "-l", JOB_NAME_LABEL, "-o", "json", check=False
            )
            if result.returncode != 0:
                self._note(f"listing pods in {namespace}: {result.stderr.strip()}")
                return None  # an incomplete list must not look like deleted pods
            pods.extend(json.loads(result.stdout)["items"])
        return pods

    def _poll(self) -> None:
        pods = self._list_job_pods()
        if pods is None:
            return
        live = {pod["metadata"]["uid"]: pod for pod in pods}
        with self._lock:
            for uid, worker in self._workers.items():
                pod = live.get(uid)
                if pod is None or pod["metadata"].get("deletionTimestamp"):
                    worker.cancel.set()
            for uid, pod in live.items():
                if uid in self._workers or self._stopping.is_set():
                    continue
                if pod["metadata"].get("deletionTimestamp") or not pod["spec"].get("nodeName"):
                    continue
                if pod.get("status", {}).get("phase", "Pending") != "Pending":
                    continue  # started by someone else (a previous kubelet): not ours to run twice
                cancel = threading.Event()
                thread = threading.Thread(
                    target=self._run_pod, args=(pod, cancel), name=f"pod-{pod['metadata']['name']}", daemon=True
                )
                self._workers[uid] = _Worker(thread, cancel)
                thread.start()

    # ---- one pod ----------------------------------------------------------------------------

    def _patch_status(self, pod: Manifest, status: Manifest) -> bool:
        metadata = pod["metadata"]
        result = self._plane.kubectl(
            "patch", "pod", metadata["name"], "-n", metadata["namespace"], "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}),
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            if "NotFound" not in result.stderr:
                self._note(f"status of {metadata['namespace']}/{metadata['name']}: {result.stderr.strip()}")
            return False
        return True

    def _record(
        self,
        pod: Manifest,
        launch: _Launch | None,
        *,
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
        error: str | None = None,
    ) -> None:
        metadata = pod["metadata"]
        run = PodRun(
            namespace=metadata["namespace"],
            pod=metadata["name"],
            job=metadata.get("labels", {}).get(JOB_NAME_LABEL, ""),
            args=tuple(launch.args) if launch else (),
            env=dict(launch.env) if launch else {},
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            error=error,
        )
        with self._lock:
            self._runs.append(run)

    def _run_pod(self, pod: Manifest, cancel: threading.Event) -> None:
        name = pod_directory_name(pod)
        with self._lock:
            directory = self._directories.setdefault(name, threading.Lock())
        # An attempt still stopping (a deleted pod) keeps the Job's directory until its process is gone.
        while not directory.acquire(timeout=1.0):
            if cancel.is_set() or self._stopping.is_set():
                self._record(pod, None, error="stopped waiting for the previous attempt of its Job to end")
                return
        try:
            self._run_pod_guarded(pod, cancel)
        finally:
            directory.release()

    def _run_pod_guarded(self, pod: Manifest, cancel: threading.Event) -> None:
        try:
            self._run_pod_unguarded(pod, cancel)
        except Exception as error:  # a bug here must show in the test, not vanish with the thread
            self._note(f"pod {pod['metadata']['name']}: {error!r}")
            self._record(pod, None, error=f"ProcessKubelet failed: {error!r}")

    def _run_pod_unguarded(self, pod: Manifest, cancel: threading.Event) -> None:
        assert self._workdir is not None
        metadata = pod["metadata"]
        root = self._workdir / pod_directory_name(pod)
        shown = ""
        while True:
            try:
                objects = _Objects(self._plane, metadata["namespace"])
                launch = prepare_launch(pod, objects, root, self._executables, self._overrides)
                break
            except MissingReference as missing:
                message = str(missing)
                if message != shown:
                    self._patch_status(pod, waiting_status(pod, "CreateContainerConfigError", message))
                    shown = message
                if cancel.wait(1.0):
                    self._record(pod, None, error=f"stopped waiting (pod deleted or kubelet stopped): {message}")
                    return
            except UnsupportedPod as unsupported:
                message = f"ProcessKubelet cannot run this pod: {unsupported}"
                self._patch_status(pod, waiting_status(pod, "CreateContainerError", message))
                self._record(pod, None, error=message)
                return

        started_at = _now()
        running = running_status(pod, started_at)
        if not self._patch_status(pod, running):
            self._record(pod, launch, error="the pod went away before its container started")
            return
        pod = {**pod, "status": {**pod.get("status", {}), **running}}
        exit_code, stdout, stderr, stopped = self._execute(launch, root, cancel)
        # A deleted pod has no status left to write; a stopped kubelet leaves its pods as they are.
        if not (cancel.is_set() or self._stopping.is_set()):
            reason = "Completed" if exit_code == 0 else "StartError" if exit_code == 128 else "Error"
            self._patch_status(pod, terminated_status(pod, started_at, exit_code, reason, log_tail(stderr)))
        self._record(pod, launch, exit_code=exit_code, stdout=stdout, stderr=stderr, error=stopped)

    def _execute(self, launch: _Launch, root: Path, cancel: threading.Event) -> tuple[int, str, str, str | None]:
        """Runs the process to its end; returns exit code, stdout, stderr and why it was stopped."""
        stdout_path, stderr_path = root / "stdout", root / "stderr"
        stopped: str | None = None
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            try:
                process = subprocess.Popen(
                    launch.args,
                    env=launch.process_env,
                    cwd=launch.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as error:
                # What a container runtime reports for an executable it cannot start.
                message = f"failed to start {launch.args[0]!r}: {error}"
                return 128, "", message, None
            deadline = time.monotonic() + self._timeout
            while True:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.1)
                    break
                if cancel.is_set() or self._stopping.is_set():
                    stopped = "pod deleted" if not self._stopping.is_set() else "ProcessKubelet stopped"
                elif time.monotonic() > deadline:
                    stopped = f"killed by ProcessKubelet after {self._timeout:.0f}s"
                else:
                    continue
                _terminate(process)
                break
        code = process.returncode
        exit_code = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as runtimes report
        return (
            exit_code,
            stdout_path.read_text(errors="replace"),
            stderr_path.read_text(errors="replace"),
            stopped,
        )


def _terminate(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` seconds: a pod's stop, shortened."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
