"""Bundled sample knowledge base: a fictional Lumen Bikes customer-support handbook and its golden set.

`CORPUS_DIR` holds the Markdown documents (document ids are their paths relative to it, with POSIX
separators); `GOLDEN_SET` holds the labelled queries used by the golden-set gate. Used by `make demo`,
by `ragops serve --embedded` on an empty store, and by integration tests.
"""

from pathlib import Path

SAMPLE_DIR: Path = Path(__file__).parent
CORPUS_DIR: Path = SAMPLE_DIR / "corpus"
GOLDEN_SET: Path = SAMPLE_DIR / "golden.yaml"
