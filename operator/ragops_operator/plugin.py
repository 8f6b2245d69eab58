"""`kubectl ragops`: watch and steer progressive rollouts of RagDeployments from any kubeconfig.

kubectl runs any `kubectl-ragops` on the PATH as `kubectl ragops ...`. The actions are annotations
on the RagDeployment (`ragops.dev/rollout-action`, `ragops.dev/set-weight`) which the operator
applies, records in `status.rollout.lastAction` and an Event, and removes; so they work with any
RBAC that may patch the object, and GitOps users see them in the object's events. Nothing here
decides anything: `render_status` is a pure view of the object, the operator does the rest.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from .api.common import GROUP, VERSION
from .api.rollout import RolloutStrategy
from .kube import Kube, KubeError, api_error_message
from .reconcile.progressive import ACTION_ANNOTATION, SET_WEIGHT_ANNOTATION, describe_step

API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "kubectl-ragops"
FINAL_PHASES = ("Healthy", "Aborted")
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Target:
    kubeconfig: Path | None
    context: str | None
    namespace: str | None


def _target_options(function: _F) -> _F:
    for option in reversed(
        (
            click.option("-n", "--namespace", help="Namespace of the RagDeployment (default: the context's)."),
            click.option("--context", help="kubeconfig context to use (default: the current one)."),
            click.option(
                "--kubeconfig",
                type=click.Path(dir_okay=False, exists=True, path_type=Path),
                help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).",
            ),
        )
    ):
        function = option(function)
    return function


def _run(action: Callable[[Kube, str], Awaitable[None]], target: Target) -> None:
    async def run() -> None:
        try:
            kube, namespace = Kube.from_kubeconfig(
                target.kubeconfig, target.context, target.namespace, field_manager=FIELD_MANAGER
            )
        except KubeError as error:
            raise click.ClickException(str(error)) from None
        try:
            await action(kube, namespace)
        except ActionRefused as error:
            raise click.ClickException(str(error)) from None
        except Exception as error:
            message = api_error_message(error)
            if message is None:
                raise
            raise click.ClickException(message) from None
        finally:
            await kube.close()

    asyncio.run(run())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ragops")
def main() -> None:
    """Watch and steer progressive rollouts (canary, shadow) of RagDeployments.

    \b
    kubectl ragops status docs            steps, weights and the analysis table
    kubectl ragops promote docs           complete the current step (--full: all of them)
    kubectl ragops abort docs             weight 0 at once; the rollout stays aborted
    kubectl ragops pause|resume docs      hold the steps (protection keeps running)
    kubectl ragops set-weight docs 25     set the candidate's share by hand (pauses)
    kubectl ragops retry docs             start an aborted rollout again
    kubectl ragops dashboard              the same in a web page, live (-A: every namespace)
    """


class ActionRefused(Exception):
    """A request that cannot be made or was not applied; the message says why, in the user's words."""


async def _get(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    found = await kube.get(API_VERSION, "RagDeployment", namespace, name)
    if found is None:
        raise ActionRefused(f'RagDeployment "{name}" not found in namespace "{namespace}"')
    return found


@main.command()
@click.argument("name")
@click.option("-w", "--watch", is_flag=True, help="Keep showing changes until the rollout is Healthy or Aborted.")
@_target_options
def status(name: str, watch: bool, namespace: str | None, context: str | None, kubeconfig: Path | None) -> None:
    """Show a RagDeployment's rollout: steps, weight, stable and canary versions, the analysis table."""

    async def show(kube: Kube, resolved: str) -> None:
        shown = None
        while True:
            obj = await _get(kube, resolved, name)
            view = render_status(obj, datetime.now(UTC))
            if view != shown:
                if shown is not None:
                    click.echo("---")
                click.echo(view)
                shown = view
            phase = ((obj.get("status") or {}).get("rollout") or {}).get("phase")
            if not watch or phase in FINAL_PHASES:
                return
            await asyncio.sleep(2)

    _run(show, Target(kubeconfig, context, namespace))


@main.command()
@click.option("-A", "--all-namespaces", is_flag=True, help="Show RagDeployments of every namespace.")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to serve on (loopback: only you).")
@click.option("--port", default=8484, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free).")
@click.option(
    "--prometheus-url",
    help="Prometheus to read the charts from (default: each RagDeployment's spec.monitoring.prometheusUrl).",
)
@_target_options
def dashboard(
    all_namespaces: bool,
    address: str,
    port: int,
    prometheus_url: str | None,
    namespace: str | None,
    context: str | None,
    kubeconfig: Path | None,
) -> None:
    """Serve a live web page of RagDeployments, rollouts, analysis, charts, versions and rollbacks.

    It reads the cluster with your kubeconfig, and Prometheus for the charts; its promote, pause,
    resume, abort and retry buttons do what `kubectl ragops promote|pause|...` do. Stop it with Ctrl-C.
    """
    from .dashboard.server import serve

    def announce(url: str) -> None:
        click.echo(f"ragops dashboard: {url} (Ctrl-C to stop)")

    async def run(kube: Kube, resolved: str) -> None:
        await serve(
            kube,
            None if all_namespaces else resolved,
            address=address,
            port=port,
            prometheus_url=prometheus_url,
            announce=announce,
        )

    _run(run, Target(kubeconfig, context, namespace))


def _request_options(function: _F) -> _F:
    """--no-wait and --timeout, then the kubeconfig options: what every action command takes."""
    function = _target_options(function)
    function = click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the operator.")(
        function
    )
    return click.option("--no-wait", is_flag=True, help="Return at once instead of waiting for the operator.")(function)


def _action_command(action: str, help_text: str) -> None:
    @main.command(action, help=help_text)
    @click.argument("name")
    @click.option("--full", is_flag=True, help="promote only: skip every remaining step.", hidden=action != "promote")
    @_request_options
    def command(
        name: str,
        full: bool,
        no_wait: bool,
        timeout: float,
        namespace: str | None,
        context: str | None,
        kubeconfig: Path | None,
    ) -> None:
        value = "promote-full" if action == "promote" and full else action
        _request(name, {ACTION_ANNOTATION: value}, not no_wait, timeout, Target(kubeconfig, context, namespace))


_action_command("promote", "Complete the current step (a pause, an analysis) and continue; --full skips them all.")
_action_command("abort", "Abort the rollout: the candidate's weight goes to 0 at once, and it stays aborted.")
_action_command("pause", "Hold the rollout at its current step (analysis and SLO protection keep running).")
_action_command("resume", "Continue a rollout paused by hand.")
_action_command("retry", "Start an aborted rollout again from its first step.")


@main.command("set-weight")
@click.argument("name")
@click.argument("weight", type=click.IntRange(0, 100))
@_request_options
def set_weight(
    name: str,
    weight: int,
    no_wait: bool,
    timeout: float,
    namespace: str | None,
    context: str | None,
    kubeconfig: Path | None,
) -> None:
    """Set the percent of users the candidate answers; the rollout pauses until resume or promote."""
    _request(name, {SET_WEIGHT_ANNOTATION: str(weight)}, not no_wait, timeout, Target(kubeconfig, context, namespace))


@dataclass(frozen=True)
class ActionResult:
    """What a manual action came to: the annotations asked for and, when waited for, the operator's record."""

    asked: str
    record: Mapping[str, Any] | None
    """status.rollout.lastAction once the operator consumed the annotations; None when not waited for."""

    @property
    def ignored(self) -> bool:
        return self.record is not None and str(self.record.get("outcome", "")).startswith("ignored")

    def describe(self, name: str) -> str:
        if self.record is None:
            return f"ragdeployment/{name}: requested {self.asked}"
        return f"ragdeployment/{name}: {self.record['action']}: {self.record['outcome']}"


async def request_action(
    kube: Kube, namespace: str, name: str, annotations: Mapping[str, str], *, wait: bool, wait_seconds: float
) -> ActionResult:
    """Asks the operator for a manual action by annotating the RagDeployment, as every front end does
    (this command line and `ragops dashboard`); with `wait`, returns once the operator recorded it.

    Raises ActionRefused for an object that is missing or has no steps, or an operator that did not
    answer within `timeout` seconds.
    """
    obj = await _get(kube, namespace, name)
    strategy = RolloutStrategy.model_validate(((obj.get("spec") or {}).get("rollout") or {}).get("strategy") or {})
    if strategy.progressive() is None:
        raise ActionRefused(
            f"RagDeployment {name} uses the blueGreen strategy: there are no steps to act on "
            "(set spec.rollout.strategy.canary or .shadow)"
        )
    before = ((obj.get("status") or {}).get("rollout") or {}).get("lastAction")
    await kube.annotate(API_VERSION, "RagDeployment", namespace, name, annotations)
    asked = ", ".join(f"{key}={value}" for key, value in annotations.items())
    if not wait:
        return ActionResult(asked, None)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        obj = await _get(kube, namespace, name)
        pending = set(annotations) & set((obj.get("metadata") or {}).get("annotations") or {})
        last = ((obj.get("status") or {}).get("rollout") or {}).get("lastAction")
        if not pending and last != before and last is not None:
            return ActionResult(asked, last)
    raise ActionRefused(
        f"requested {asked}, but the operator did not apply it within {wait_seconds:g}s (is it running?)"
    )


def _request(name: str, annotations: Mapping[str, str], wait: bool, timeout: float, target: Target) -> None:
    async def send(kube: Kube, namespace: str) -> None:
        result = await request_action(kube, namespace, name, annotations, wait=wait, wait_seconds=timeout)
        click.echo(result.describe(name))
        if result.ignored:
            sys.exit(1)

    _run(send, target)


# ---- the view ---------------------------------------------------------------------------------------


def _ago(value: str | None, now: datetime) -> str:
    if not value:
        return "-"
    seconds = int((now - datetime.fromisoformat(value)).total_seconds())
    minutes, seconds = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    span = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
    return f"{value} ({span} ago)"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{float(value):.4g}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in (headers, *rows):
        lines.append(indent + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    return [line.rstrip() for line in lines]


def step_states(strategy: RolloutStrategy, rollout: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each step of the rollout in `rollout` (status.rollout) as (description, state): done, running,
    paused, aborted or -; empty for blueGreen or before a rollout started."""
    steps = strategy.progressive()
    if steps is None or not rollout.get("rolloutId"):
        return []
    index = rollout.get("currentStepIndex")
    phase = rollout.get("phase")
    states = []
    for number, step in enumerate(steps.steps):
        if phase == "Aborted" and index == number:
            state = "aborted"
        elif index is None or number > index or phase == "Aborted":
            state = "-"
        elif number < index or phase in ("Promoting", "Healthy"):
            state = "done"
        else:
            state = "paused" if phase == "Paused" else "running"
        states.append((describe_step(step), state))
    return states


def render_status(obj: Mapping[str, Any], now: datetime) -> str:
    """The rollout view of one RagDeployment object, as `kubectl ragops status` prints it."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    rollout = status.get("rollout") or {}
    strategy = RolloutStrategy.model_validate((spec.get("rollout") or {}).get("strategy") or {})
    lines = [
        f"Name:        {meta.get('name')}",
        f"Namespace:   {meta.get('namespace')}",
        f"Strategy:    {strategy.name}",
        f"Phase:       {status.get('phase') or '-'} (rollout: {rollout.get('phase') or '-'})",
        f"Desired:     {(spec.get('knowledgeBase') or {}).get('version')}",
        f"Stable:      {rollout.get('stableVersion') or status.get('activeVersion') or '-'}",
        f"Canary:      {rollout.get('canaryVersion') or '-'}",
        f"Weight:      {rollout.get('weight', 0)}% of users    Shadow: {_number(rollout.get('shadowPercent', 0))}%",
    ]
    if rollout.get("message"):
        lines.append(f"Message:     {rollout['message']}")
    if rollout.get("startedAt"):
        lines.append(f"Started:     {_ago(rollout.get('startedAt'), now)}")
    steps = step_states(strategy, rollout)
    if steps:
        rows = [[str(number + 1), text, state] for number, (text, state) in enumerate(steps)]
        lines += ["", "Steps:", *_table(["#", "STEP", "STATE"], rows)]
    analysis = rollout.get("analysis")
    if analysis:
        lines += [
            "",
            f"Analysis:    {analysis.get('verdict')} at {analysis.get('checkedAt')} "
            f"over {_number(analysis.get('windowSeconds'))}s (failed in a row: "
            f"{analysis.get('consecutiveFailures', 0)}, inconclusive in a row: "
            f"{analysis.get('consecutiveInconclusive', 0)})",
        ]
        rows = [
            [
                o.get("name", ""),
                o.get("source") or "-",
                _number(o.get("stable")),
                _number(o.get("canary")),
                o.get("limit", ""),
                o.get("verdict", ""),
                o.get("samples", ""),
            ]
            for o in analysis.get("objectives") or []
        ]
        if rows:
            lines += _table(["OBJECTIVE", "SOURCE", "STABLE", "CANARY", "LIMIT", "VERDICT", "SAMPLES"], rows)
        if analysis.get("sloVerdict"):
            lines.append(f"  Candidate SLOs: {analysis['sloVerdict']}: {analysis.get('sloMessage', '')}")
    abort = rollout.get("abort")
    if abort:
        lines += ["", f"Aborted:     {abort.get('reason')} at {abort.get('at')}: {abort.get('message')}"]
    action = rollout.get("lastAction")
    if action:
        lines.append(f"Last action: {action.get('action')} at {action.get('at')}: {action.get('outcome')}")
    conditions = [
        f"{c['type']}={c['status']}" + (f" ({c['reason']})" if c.get("reason") else "")
        for c in status.get("conditions") or []
    ]
    if conditions:
        lines += ["", "Conditions:  " + ", ".join(conditions)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
