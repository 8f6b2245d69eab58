"""The `ragops` command line. Subcommands arrive with the capabilities they drive."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ragops_runtime.cli import kb, serve

from . import crdgen


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
@click.option("--check", is_flag=True, help="Write nothing; fail if the files differ from the models.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the CRDs as one YAML stream instead.")
def crds(output_dir: Path, check: bool, to_stdout: bool) -> None:
    """Generate the CustomResourceDefinitions from the API models."""
    if to_stdout:
        click.echo("---\n".join(crdgen.render_crds().values()), nl=False)
        return
    if check:
        problems = crdgen.stale_crds(output_dir)
        if problems:
            click.echo("\n".join(problems), err=True)
            click.echo(f"CRDs in {output_dir} are stale: run `ragops crds` and commit the result.", err=True)
            sys.exit(1)
        click.echo(f"CRDs in {output_dir} match the models.")
        return
    for path in crdgen.write_crds(output_dir):
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
@click.option("--standalone", is_flag=True, help="No peering: for a single replica or tests.")
@click.option(
    "--liveness",
    default="http://0.0.0.0:8081/healthz",
    show_default=True,
    help="Liveness endpoint for the operator pod's probe.",
)
def operator_run(namespaces: tuple[str, ...], standalone: bool, liveness: str) -> None:
    """Run the operator until stopped (peering elects one active replica among several)."""
    import kopf

    from . import handlers  # noqa: F401 - importing registers the handlers
    from .settings import OperatorSettings

    watched = list(namespaces) or OperatorSettings().namespace_list
    kopf.run(clusterwide=not watched, namespaces=watched, standalone=standalone, liveness_endpoint=liveness)


main.add_command(kb)
main.add_command(serve)
