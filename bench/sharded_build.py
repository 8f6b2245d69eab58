"""Benchmark (issue 18, item 5): wall time of a version built by 1, 2 (and 4) shards, as ratios to one.

Corpus: the Python 3.11 documentation from Debian's python3.11-doc (490 HTML pages, ~9,000 chunks;
`make bench` installs it). Each shard is its own `ragops kb build --shard-index I --shard-count N`
process, as the pods of the Indexed Job run it, all started at once against a fresh database of
one embedded PostgreSQL; the one-shard baseline is plain `ragops kb build`. Wall time runs from
the first start to the last exit (process start-up included, as for pods). Every build's content
digest is checked equal to the baseline's.

Two embedders:

- `static`: the local wordllama model, CPU-bound. Every shard parses every page (boilerplate
  removal needs them all), so that share does not shrink, and the speed-up is bounded by the
  machine's cores: on 2 cores shared with other work, expect well under 2x.
- `api`: an OpenAI-compatible double answering each request after a fixed latency, as a remote
  embedding API does (embedding-bound); shards add concurrent requests, so time shrinks with N
  until the CPU share (parsing, chunking, storing, indexing) dominates.

    .venv/bin/python -m bench.sharded_build [--quick] [--repeats 3] [--embedder static|api|both]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Postgres, Row, load_average, machine, median, print_rows, result_document, write_result
from bench.real_corpus import HTML_ROOT, SOURCES
from tests.support.openai_embeddings import running_openai_embeddings_server

RAGOPS = str(Path(sys.executable).parent / "ragops")
API_LATENCY_SECONDS = 0.5
"""The double's reply time per request: a remote API's round trip for a batch under load."""
API_BATCH_SIZE = 16
"""Texts per request: with 4 requests in flight, 9,000 chunks take ~70 s of waiting, several times
the CPU work of one build on an idle machine, so the build is embedding-bound as with a real API."""
API_DIMENSIONS = 256


def build_command(embedding: Sequence[str], shard: int | None, shards: int) -> list[str]:
    command = [RAGOPS, "kb", "build", "--kb", "pydocs", "--version", "v1", "--json", *embedding]
    for source in SOURCES:
        command += ["--source", source]
    if shards > 1:
        command += ["--shard-index", str(shard), "--shard-count", str(shards)]
    return command


def timed_build(dsn: str, embedding: Sequence[str], shards: int) -> tuple[float, str]:
    """Wall seconds of one build by `shards` processes, and the content digest it completed."""
    env = {**os.environ, "RAGOPS_DSN": dsn}
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            build_command(embedding, index, shards),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(shards)
    ]
    outputs = [process.communicate() for process in processes]
    seconds = time.perf_counter() - started
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            raise SystemExit(f"a build process exited {process.returncode}: {stderr[-2000:]}")
    digests = [json.loads(stdout).get("contentDigest") for stdout, _ in outputs]
    completed = [digest for digest in digests if digest]
    if len(completed) != 1:
        raise SystemExit(f"expected exactly one process to complete the version, got {len(completed)}")
    return seconds, completed[0]


def measure(pg: Postgres, name: str, embedding: Sequence[str], counts: Sequence[int], repeats: int) -> list[Row]:
    seconds: dict[int, list[float]] = {count: [] for count in counts}
    digests: set[str] = set()
    for _ in range(repeats):
        for count in counts:  # interleaved, so a load swing hits every count alike
            with pg.database("sharded") as dsn:
                wall, digest = timed_build(dsn, embedding, count)
            seconds[count].append(wall)
            digests.add(digest)
            print(f"  {name}: {count} shard(s) {wall:.1f}s (load {load_average()})", flush=True)
    if len(digests) != 1:
        raise SystemExit(f"{name}: builds by different shard counts differ in content: {sorted(digests)}")
    baseline = f"{name}, 1 shard: build wall time (median)"
    rows = [Row(baseline, median(seconds[1]), "s", repeats=repeats)]
    for count in counts[1:]:
        rows.append(
            Row(
                f"{name}, {count} shards: build wall time (median)",
                median(seconds[count]),
                "s",
                baseline,
                None,
                repeats,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repeat; results to a temp directory")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--embedder", choices=["static", "api", "both"], default="both")
    args = parser.parse_args()
    if not (HTML_ROOT / "library" / "json.html").exists():
        raise SystemExit(f"{HTML_ROOT} is missing: install Debian's python3.11-doc (bash tools/bench-corpus.sh)")
    repeats = 1 if args.quick else args.repeats
    load_before = load_average()
    started = datetime.now(UTC)
    rows: list[Row] = []
    with Postgres() as pg:
        if args.embedder in ("static", "both"):
            static = ["--embedding-provider", "static", "--embedding-dimensions", "256"]
            rows += measure(pg, "python3.11-doc, static embedder (CPU-bound)", static, (1, 2), repeats)
        if args.embedder in ("api", "both"):
            with running_openai_embeddings_server(API_DIMENSIONS, latency=API_LATENCY_SECONDS) as server:
                api = [
                    "--embedding-provider", "openai", "--embedding-model", "fake-embed",
                    "--embedding-endpoint", server.url, "--embedding-dimensions", str(API_DIMENSIONS),
                    "--batch-size", str(API_BATCH_SIZE),
                ]  # fmt: skip
                name = (
                    f"python3.11-doc, API embedder ({API_LATENCY_SECONDS * 1000:.0f} ms per request of "
                    f"{API_BATCH_SIZE}, 4 in flight per process)"
                )
                rows += measure(pg, name, api, (1, 2, 4), repeats)
        document = result_document(
            "sharded_build", machine(pg.version), rows, started, load=f"{load_before} -> {load_average()}"
        )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
