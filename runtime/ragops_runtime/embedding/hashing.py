"""The built-in embedder: feature hashing of words and word pairs, offline and deterministic.

This is lexical (bag-of-words), not semantic: texts are close when they share words, and synonyms
do not match ("car" and "automobile" are as far apart as "car" and "banana"). It exists so a
knowledge base can be built, served and tested with no model server and no network; use a real
embedding model (the `openai` provider) for semantic retrieval.

The definition of "hashing-v1" is a stored-format contract, because vectors written to an index
must be reproducible by the query path, in any process, on any machine:

1. Text is NFKC-normalised (so composed and decomposed accents agree) and lower-cased.
2. Tokens are the matches of the regex `\\w+` (Unicode word characters).
3. Features are the unigrams (weight 1) and the adjacent-token bigrams, joined by one space (weight 0.5).
4. Each distinct feature with term frequency tf contributes weight * (1 + ln tf).
5. h = int.from_bytes(blake2b(feature as UTF-8, digest_size=8), "little"); the feature lands at
   index (h >> 1) % dimensions with sign -1 if h is odd else +1. blake2b, never the built-in
   hash(), which is salted per process.
6. The summed vector is L2-normalised; a text without features (or whose features cancel) is all zeros.

Changing any step requires a new model name. This module does no I/O and keeps no state.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_TOKEN = re.compile(r"\w+")
_UNIGRAM_WEIGHT = 1.0
_BIGRAM_WEIGHT = 0.5


def _feature_hash(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")


class HashingEmbedder:
    """Feature-hashing embedder ("hashing" provider); lexical, not semantic (see the module docstring).

    CPU-bound and fast (microseconds per word), so `embed_batch` runs inline on the event loop.
    """

    provider: str = "hashing"

    def __init__(self, dimensions: int = 384, model: str = "hashing-v1") -> None:
        if dimensions < 1:
            raise ValueError(f"hashing embedder dimensions must be at least 1, got {dimensions}")
        self.dimensions = dimensions
        self.model = model
        self.retries = 0

    def embed_one(self, text: str) -> list[float]:
        """The vector of one text; synchronous, for the query path."""
        vector: list[float] = self._vector(text).tolist()
        return vector

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(text) for text in texts]

    async def aclose(self) -> None:
        return None

    def _vector(self, text: str) -> npt.NDArray[np.float64]:
        tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())
        unigrams = Counter(tokens)
        bigrams = Counter(f"{first} {second}" for first, second in itertools.pairwise(tokens))
        count = len(unigrams) + len(bigrams)
        if count == 0:
            return np.zeros(self.dimensions, dtype=np.float64)

        features = itertools.chain(unigrams, bigrams)
        hashes = np.fromiter((_feature_hash(feature) for feature in features), dtype=np.uint64, count=count)
        tf = np.fromiter(itertools.chain(unigrams.values(), bigrams.values()), dtype=np.float64, count=count)
        base = np.repeat([_UNIGRAM_WEIGHT, _BIGRAM_WEIGHT], [len(unigrams), len(bigrams)])
        signs = np.where(hashes & np.uint64(1), -1.0, 1.0)
        indices = ((hashes >> np.uint64(1)) % np.uint64(self.dimensions)).astype(np.intp)

        weights = signs * base * (1.0 + np.log(tf))
        # bincount with weights is float64 already; its stubs only know the unweighted int result.
        vector = np.bincount(indices, weights=weights, minlength=self.dimensions).astype(np.float64, copy=False)
        norm = float(np.linalg.norm(vector))
        # Opposite-signed collisions can cancel exactly; a zero vector stays zero rather than NaN.
        return vector / norm if norm > 0.0 else vector
