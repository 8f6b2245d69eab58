"""The built-in hashing embedder: its stored-format definition, determinism, geometry and its limits."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ragops_runtime.embedding import HashingEmbedder

REPO_ROOT = Path(__file__).resolve().parents[3]
TEXTS = [
    "Kubernetes operators reconcile desired state",
    "Größe und Café: NFKC, naïve tokens",
    "the the the cat",
    "",
]


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


def reference_vector(text: str, dimensions: int) -> list[float]:
    """hashing-v1 straight from the module docstring's six steps, in plain Python."""
    tokens = re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())
    weighted = [(token, 1.0) for token in tokens] + [(f"{a} {b}", 0.5) for a, b in itertools.pairwise(tokens)]
    counts = Counter(feature for feature, _ in weighted)
    weight_of = dict(weighted)
    vector = [0.0] * dimensions
    for feature, tf in counts.items():
        h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
        vector[(h >> 1) % dimensions] += (-1.0 if h & 1 else 1.0) * weight_of[feature] * (1 + math.log(tf))
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm else vector


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("dimensions", [8, 384])
def test_matches_the_documented_definition(text: str, dimensions: int) -> None:
    # hashing-v1 vectors are stored in indexes; this pins the definition the query path must reproduce.
    assert HashingEmbedder(dimensions).embed_one(text) == pytest.approx(reference_vector(text, dimensions), abs=1e-12)


def test_same_vectors_in_a_fresh_interpreter_with_another_hash_seed() -> None:
    probe = (
        "import json, sys\n"
        "from ragops_runtime.embedding import HashingEmbedder\n"
        "print(json.dumps([HashingEmbedder(64).embed_one(t) for t in json.load(sys.stdin)]))\n"
    )
    # A different PYTHONHASHSEED would change anything that leaned on the built-in, salted hash().
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        input=json.dumps(TEXTS),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == [HashingEmbedder(64).embed_one(text) for text in TEXTS]


@pytest.mark.parametrize("dimensions", [1, 7, 384, 1536])
def test_vectors_have_the_configured_dimension_and_unit_length(dimensions: int) -> None:
    vector = HashingEmbedder(dimensions).embed_one("a short text about vector search")
    assert len(vector) == dimensions
    assert np.linalg.norm(vector) == pytest.approx(1.0)


@pytest.mark.parametrize("text", ["", "   ", "!!! ... ???"])
def test_text_without_words_is_the_zero_vector(text: str) -> None:
    assert HashingEmbedder(16).embed_one(text) == [0.0] * 16


def test_case_and_unicode_normalisation_do_not_change_the_vector() -> None:
    embedder = HashingEmbedder(128)
    composed = embedder.embed_one("Café in Zürich")
    assert embedder.embed_one("CAFÉ IN ZÜRICH") == composed
    assert embedder.embed_one(unicodedata.normalize("NFD", "Café in Zürich")) == composed
    assert any(composed)


def test_similar_texts_are_closer_than_unrelated_ones() -> None:
    embedder = HashingEmbedder(384)
    query = embedder.embed_one("how do I roll back a failed deployment")
    related = embedder.embed_one("roll back the deployment when it failed")
    unrelated = embedder.embed_one("quarterly revenue grew by four percent in Europe")
    assert cosine(query, related) > 0.4
    assert cosine(query, related) > cosine(query, unrelated) + 0.3


def test_word_order_matters_through_bigrams() -> None:
    embedder = HashingEmbedder(4096)
    forward = embedder.embed_one("dog bites man")
    backward = embedder.embed_one("man bites dog")
    # Same words, different pairs: close, but not the same text.
    assert 0.5 < cosine(forward, backward) < 0.99


def test_repeated_words_count_sublinearly() -> None:
    embedder = HashingEmbedder(4096)
    once = embedder.embed_one("spam eggs")
    often = embedder.embed_one("spam spam spam spam spam spam spam spam eggs")
    eggs = embedder.embed_one("eggs")
    # With raw counts "eggs" would all but vanish from `often`; with 1 + ln(tf) it keeps a real share.
    assert cosine(often, eggs) > 0.25
    assert cosine(often, eggs) < cosine(once, eggs)


def test_it_is_lexical_synonyms_do_not_match() -> None:
    # The documented limitation: no shared words, no similarity, however close the meaning.
    embedder = HashingEmbedder(384)
    text = embedder.embed_one("purchase an automobile")
    synonym = embedder.embed_one("buy a car")
    unrelated = embedder.embed_one("bake bread")
    assert cosine(text, synonym) <= cosine(text, unrelated) + 1e-9
    assert abs(cosine(text, synonym)) < 0.1


async def test_embed_batch_equals_embed_one_in_order() -> None:
    embedder = HashingEmbedder(32)
    assert await embedder.embed_batch(TEXTS) == [embedder.embed_one(text) for text in TEXTS]
    assert await embedder.embed_batch([]) == []
    await embedder.aclose()


def test_identity_and_validation() -> None:
    embedder = HashingEmbedder()
    assert (embedder.provider, embedder.model, embedder.dimensions, embedder.retries) == (
        "hashing",
        "hashing-v1",
        384,
        0,
    )
    with pytest.raises(ValueError, match="at least 1"):
        HashingEmbedder(0)
