"""The default embedder: a static (token-lookup) semantic model whose weights ship inside a wheel.

A static embedding model maps every token of its vocabulary to a learned vector; a text's vector is
the mean of its tokens' vectors. There is no transformer at run time, so embedding costs a tokenizer
pass and a table lookup (thousands of chunks per second on two cores, well under a millisecond per
query) and the runtime image stays small: no torch, no model server, no API key, no download.
Unlike the `hashing` embedder it is semantic: "delete" and "remove" land close together.

The one model today is WordLlama's l2_supercat (MIT licence), from the `wordllama` wheel on PyPI:
a 32,000-token Llama-2 vocabulary, 256 dimensions, trained with Matryoshka loss so that its first
64 or 128 dimensions are themselves a usable model. Only its files are used (`weights/` and
`tokenizers/` of the installed package); the package's own loader, which falls back to a model hub,
is never called.

The definition of "wordllama-l2-supercat" is a stored-format contract, because vectors written
to an index must be reproduced by the query path on any machine:

1. The text is tokenized by the bundled tokenizer, without special tokens and without truncation.
2. The vector is the mean of the tokens' rows of the float16 table, in float32, cut to the first
   `dimensions` components (64, 128 or 256).
3. It is L2-normalised; a text without tokens is all zeros.

Both files are checked against pinned SHA-256 digests when loaded: a different `wordllama` release
with other weights is refused (EmbeddingError) instead of silently embedding queries in another space
than the one a version was built in. New weights need a new model name, which makes a new version.
This module reads the two files once per process and does no network I/O.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ragops_runtime.embedding.base import EmbeddingError


@dataclass(frozen=True)
class StaticModel:
    """Where a static model's files are and what they must hash to."""

    name: str
    package: str
    weights: str
    weights_sha256: str
    tokenizer: str
    tokenizer_sha256: str
    tensor: str
    dimensions: tuple[int, ...]


MODELS: dict[str, StaticModel] = {
    "wordllama-l2-supercat": StaticModel(
        name="wordllama-l2-supercat",
        package="wordllama",
        weights="weights/l2_supercat_256.safetensors",
        weights_sha256="64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5",
        tokenizer="tokenizers/l2_supercat_tokenizer_config.json",
        tokenizer_sha256="93248f2a9ec36c7b35f700a033d5f36228aae48db61aee31007fa49062cdeb68",
        tensor="embedding.weight",
        dimensions=(64, 128, 256),
    ),
}
DEFAULT_MODEL = "wordllama-l2-supercat"
DEFAULT_DIMENSIONS = 256


@dataclass(frozen=True)
class _Loaded:
    tokenizer: object  # tokenizers.Tokenizer; typed loosely, the package ships no stubs for mypy's strict mode
    table: npt.NDArray[np.float32]


class StaticEmbedder:
    """A static model from an installed wheel ("static" provider); see the module docstring.

    CPU-bound and fast, so `embed_batch` runs inline: the tokenizer's batch encoding releases the GIL
    and uses its own threads, and a query is a few microseconds of table lookups.
    """

    provider: str = "static"

    def __init__(self, model: str = DEFAULT_MODEL, dimensions: int = DEFAULT_DIMENSIONS) -> None:
        spec = MODELS.get(model)
        if spec is None:
            raise ValueError(f"unknown static embedding model {model!r}: expected one of {', '.join(MODELS)}")
        if dimensions not in spec.dimensions:
            allowed = ", ".join(str(size) for size in spec.dimensions)
            raise ValueError(f"static model {model} has dimensions {allowed}, not {dimensions}")
        self.model = model
        self.dimensions = dimensions
        self.retries = 0
        self._spec = spec

    def embed_many(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """The vectors of `texts` as one (len(texts), dimensions) array; synchronous."""
        loaded = _load(self._spec)  # also for no texts: `QueryEmbeddings.warm` loads the model that way
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        encodings = loaded.tokenizer.encode_batch(list(texts), add_special_tokens=False)  # type: ignore[attr-defined]
        means = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        table = loaded.table[:, : self.dimensions]
        for row, encoding in enumerate(encodings):
            if encoding.ids:
                # One text's rows at a time: gathering a whole batch's rows first costs a large
                # allocation whose page faults outweigh the arithmetic.
                means[row] = np.take(table, np.asarray(encoding.ids, dtype=np.intp), axis=0).mean(axis=0)
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        # A text with no tokens stays all zeros rather than NaN.
        normalised: npt.NDArray[np.float32] = np.divide(means, norms, out=np.zeros_like(means), where=norms > 0)
        return normalised

    def embed_one(self, text: str) -> list[float]:
        vector: list[float] = self.embed_many([text])[0].tolist()
        return vector

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = self.embed_many(texts).tolist()
        return vectors

    async def aclose(self) -> None:
        return None


def package_directory(package: str) -> Path:
    """The installed package's directory, found without importing (and so running) the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"static embedder: the {package!r} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=4)
def _load(spec: StaticModel) -> _Loaded:
    """Reads and verifies a model's files once per process: every embedder of that model shares them."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    directory = package_directory(spec.package)
    weights = _verified(directory / spec.weights, spec.weights_sha256, spec)
    tokenizer_file = _verified(directory / spec.tokenizer, spec.tokenizer_sha256, spec)
    table = load_file(str(weights))[spec.tensor].astype(np.float32)
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return _Loaded(tokenizer=tokenizer, table=table)


def _verified(path: Path, expected: str, spec: StaticModel) -> Path:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise EmbeddingError(f"static embedder {spec.name}: cannot read {path}: {error.strerror or error}") from None
    if digest != expected:
        raise EmbeddingError(
            f"static embedder {spec.name}: {path} has SHA-256 {digest[:12]}..., not the pinned {expected[:12]}...: "
            f"another {spec.package} release changed the model; vectors would not match the versions built with it"
        )
    return path
