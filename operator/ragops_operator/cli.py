"""The `ragops` command line. Subcommands arrive with the capabilities they drive."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ragops_runtime.cli import cost, kb, serve

from . import crdgen
from .plugin import dashboard


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ragops")
def main() -> None:
    """ragops: retrieval-augmented generation on Kubernetes, gated and rolled back by SLOs."""


@main.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("crds"),
    show_default=True,
    help="Directory the CRD YAML files are written to (or compared with, with --check).",
)
@click.option(
    "--chart-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("charts/ragops"),
    show_default=True,
    help="Helm chart whose templates/crds/ get the same CRDs, behind `crds.install` (or are checked).",
)
@click.option("--check", is_flag=True, help="Write nothing; fail if the files differ from the models.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the CRDs as one YAML stream instead.")
def crds(output_dir: Path, chart_dir: Path, check: bool, to_stdout: bool) -> None:
    """Generate the CustomResourceDefinitions from the API models (and the chart's copy of them)."""
    if to_stdout:
        click.echo("---\n".join(crdgen.render_crds().values()), nl=False)
        return
    if check:
        problems = crdgen.stale_crds(output_dir) + crdgen.stale_chart_crds(chart_dir)
        if problems:
            click.echo("\n".join(problems), err=True)
            where = f"{output_dir} or {chart_dir / crdgen.CHART_CRD_DIR}"
            click.echo(f"CRDs in {where} are stale: run `ragops crds` and commit the result.", err=True)
            sys.exit(1)
        click.echo(f"CRDs in {output_dir} and {chart_dir / crdgen.CHART_CRD_DIR} match the models.")
        return
    for path in crdgen.write_crds(output_dir) + crdgen.write_chart_crds(chart_dir):
        click.echo(f"wrote {path}")


@main.group("operator")
def operator_group() -> None:
    """The Kubernetes operator that reconciles KnowledgeBaseVersions and RagDeployments."""


@operator_group.command("run")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only these namespaces (repeat); default: $RAGOPS_OPERATOR_NAMESPACES or the whole cluster.",
)
@click.option("--standalone", is_flag=True, help="No leader election: for a single replica, development or tests.")
@click.option(
    "--health-address",
    default="0.0.0.0:8081",
    show_default=True,
    help="HOST:PORT serving /healthz, /readyz and /metrics, on leaders and standbys alike.",
)
def operator_run(namespaces: tuple[str, ...], standalone: bool, health_address: str) -> None:
    """Run the operator until stopped; replicas elect one leader through a Lease, the others stand by."""
    import asyncio
    import logging

    import kopf

    from . import handlers  # noqa: F401 - importing registers the handlers
    from .settings import OperatorSettings

    watched = list(namespaces) or OperatorSettings().namespace_list
    kopf.configure(log_format=kopf.LogFormat.JSON)
    for chatty in ("httpx", "httpx2", "httpcore"):  # one line per API request drowns the transitions
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # An asyncio.Event, set from the loop: Kopf waits on a threading.Event in a worker thread that
    # would keep the process alive after a SIGTERM until somebody set it.
    stop_flag = asyncio.Event()
    memo = kopf.Memo(
        leader_election=not standalone, health_address=health_address, stop_flag=stop_flag, namespaced=bool(watched)
    )
    # Kopf's peering stays off: it pauses every replica of equal priority and has no lock; the Lease elects.
    kopf.run(clusterwide=not watched, namespaces=watched, standalone=True, stop_flag=stop_flag, memo=memo)
    if getattr(memo, "lost_leadership", False):
        click.echo("lost the leader lease: exiting so the pod restarts as a standby", err=True)
        sys.exit(1)


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="An empty directory for the demo's PostgreSQL (default: a fresh temporary one, removed after).",
)
@click.option("--keep", is_flag=True, help="Keep the data directory (and the runtime's log) after the demo.")
def demo(data_dir: Path | None, keep: bool) -> None:
    """The whole story on this machine, no cluster: build, gate, serve, refuse, roll back on an SLO breach."""
    from rich.console import Console

    from ragops_runtime.store.embedded import EmbeddedServerMissing

    from .demo import DemoError, run_demo

    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        run_demo(data_dir=data_dir, keep=keep, console=console)
    except (DemoError, EmbeddedServerMissing) as error:
        console.print(f"[bold red]demo failed:[/] {error}", highlight=False)
        sys.exit(1)
    console.print("[bold green]demo complete[/]")


main.add_command(kb)
main.add_command(serve)
main.add_command(cost)
main.add_command(dashboard)
