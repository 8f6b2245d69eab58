"""Chunking is pure: table tests and properties over generated documents, no files."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Literal

import pytest

from ragops_runtime.kb.chunking import approximate_tokens, chunk_document
from ragops_runtime.kb.documents import Chunk, Document

Strategy = Literal["recursive", "fixed"]


def markdown(text: str, document_id: str = "guide.md") -> Document:
    return Document(id=document_id, source=f"docs/{document_id}", text=text, format="markdown")


def sentence(rng: random.Random, words: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    text = " ".join("".join(rng.choices(letters, k=rng.randint(1, 14))) for _ in range(words))
    return text.capitalize() + rng.choice([".", ".", ".", "!", "?", ","])


def generated_document(seed: int, sections: int = 12) -> str:
    """Headings at several depths, prose, lists, fenced code and the odd over-long paragraph."""
    rng = random.Random(seed)
    parts = ["Preamble before any heading. " + sentence(rng, 8)]
    for index in range(sections):
        parts.append("#" * rng.randint(1, 3) + f" Section {index}")
        for _ in range(rng.randint(0, 5)):
            kind = rng.random()
            if kind < 0.6:
                parts.append(" ".join(sentence(rng, rng.randint(3, 25)) for _ in range(rng.randint(1, 12))))
            elif kind < 0.8:
                parts.append("\n".join(f"- {sentence(rng, rng.randint(2, 9))}" for _ in range(rng.randint(2, 8))))
            else:
                code = "\n".join(f"    value_{n} = compute({n})  # step {n}" for n in range(rng.randint(2, 10)))
                parts.append(f"```python\n# comment, not a heading\n{code}\n\nprint('done')\n```")
    return "\n\n".join(parts) + "\n"


def assert_chunks_cover_document(chunks: list[Chunk], text: str) -> None:
    """Each chunk is a contiguous run of the document's words; together they cover it, in order."""
    words = text.split()
    start, end = 0, 0
    for chunk in chunks:
        chunk_words = chunk.text.split()
        candidates = [s for s in range(start, end + 1) if words[s : s + len(chunk_words)] == chunk_words]
        assert candidates, f"chunk {chunk.position} is not a run of document words starting within the previous one"
        start = candidates[0]
        assert start + len(chunk_words) > end, f"chunk {chunk.position} adds nothing after the previous chunk"
        end = start + len(chunk_words)
    assert end == len(words)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        (" \n\t ", 0),
        ("a", 1),
        ("word", 1),
        ("words", 2),
        ("internationalization", 5),
        ("Hello, world!", 6),
        ("snake_case", 4),
        ("2024-01-01", 5),
        ("naïve café", 3),
        ("日本語", 1),
        ("a  b\tc\n", 3),
        ("https://example.com/a", 11),
    ],
)
def test_approximate_tokens(text: str, tokens: int) -> None:
    assert approximate_tokens(text) == tokens


def test_approximate_tokens_is_additive_across_whitespace() -> None:
    text = generated_document(seed=7, sections=3)
    assert approximate_tokens(text) == sum(approximate_tokens(word) for word in text.split())


def test_recursive_tracks_heading_paths_and_starts_sections_with_their_heading() -> None:
    text = """Intro before any heading.

# Install

## On Linux

Use the package.

```bash
# a shell comment is not a heading
apt install ragops
```

### From source

Build it.

## On macOS

Use brew.

Reference
=========

All the knobs.

Options
-------

Every option.
"""
    chunks = chunk_document(markdown(text), strategy="recursive", size=200, overlap=0)

    assert [(chunk.heading_path, chunk.text.split("\n")[0]) for chunk in chunks] == [
        ((), "Intro before any heading."),
        (("Install", "On Linux"), "# Install"),
        (("Install", "On Linux", "From source"), "### From source"),
        (("Install", "On macOS"), "## On macOS"),
        (("Reference",), "Reference"),
        (("Reference", "Options"), "Options"),
    ]
    # "# Install" has nothing of its own, so it introduces its first subsection's chunk.
    assert chunks[1].text.startswith("# Install\n\n## On Linux\n\nUse the package.")
    assert "# a shell comment is not a heading" in chunks[1].text
    assert chunks[4].text == "Reference\n=========\n\nAll the knobs."
    assert [chunk.position for chunk in chunks] == list(range(6))
    assert {chunk.document_id for chunk in chunks} == {"guide.md"}


def test_heading_without_body_followed_by_a_sibling_is_its_own_chunk() -> None:
    chunks = chunk_document(markdown("# Empty\n\n# Full\n\nText."), strategy="recursive", size=50, overlap=0)
    assert [(chunk.heading_path, chunk.text) for chunk in chunks] == [
        (("Empty",), "# Empty"),
        (("Full",), "# Full\n\nText."),
    ]


def test_front_matter_is_text_not_a_setext_heading() -> None:
    chunks = chunk_document(markdown("---\ntitle: Guide\n---\n\nBody."), strategy="recursive", size=50, overlap=0)
    assert [(chunk.heading_path, chunk.text) for chunk in chunks] == [((), "---\ntitle: Guide\n---\n\nBody.")]


def test_section_that_fits_is_one_chunk_with_text_stripped() -> None:
    chunks = chunk_document(markdown("\n\n# Title\n\nOne.\n\nTwo.\n\n\n"), strategy="recursive", size=50, overlap=10)
    assert [chunk.text for chunk in chunks] == ["# Title\n\nOne.\n\nTwo."]
    assert chunks[0].token_count == approximate_tokens("# Title\n\nOne.\n\nTwo.")


def test_oversized_section_splits_on_paragraphs_first() -> None:
    rng = random.Random(1)
    paragraphs = [sentence(rng, 12) + " " + sentence(rng, 12) for _ in range(6)]
    size = max(approximate_tokens(p) for p in paragraphs) * 2 + 5
    chunks = chunk_document(markdown("\n\n".join(paragraphs)), strategy="recursive", size=size, overlap=0)

    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.token_count <= size
        assert all(part in paragraphs for part in chunk.text.split("\n\n"))
    assert "\n\n".join(chunk.text for chunk in chunks) == "\n\n".join(paragraphs)


def test_oversized_paragraph_splits_on_sentences() -> None:
    sentences = [f"Sentence number {n} talks about topic {n} at some length." for n in range(20)]
    paragraph = " ".join(sentences)
    chunks = chunk_document(markdown(paragraph), strategy="recursive", size=40, overlap=0)

    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.token_count <= 40
        assert chunk.text.endswith(".")
        assert chunk.text.startswith("Sentence number")
    assert " ".join(chunk.text for chunk in chunks) == paragraph


def test_oversized_sentence_splits_on_words_without_cutting_any() -> None:
    words = [f"word{n}" for n in range(60)]
    chunks = chunk_document(markdown(" ".join(words)), strategy="recursive", size=10, overlap=0)

    assert [word for chunk in chunks for word in chunk.text.split()] == words
    assert all(chunk.token_count <= 10 for chunk in chunks)


def test_a_single_word_longer_than_size_is_the_only_oversized_chunk() -> None:
    blob = "x" * 100  # 25 tokens
    text = f"Before the blob comes a sentence. {blob} After it another sentence follows."
    chunks = chunk_document(markdown(text), strategy="recursive", size=10, overlap=3)

    oversized = [chunk for chunk in chunks if chunk.token_count > 10]
    assert [(chunk.text, chunk.token_count) for chunk in oversized] == [(blob, 25)]
    assert_chunks_cover_document(chunks, text)


def test_overlap_repeats_the_end_of_the_previous_chunk() -> None:
    sentences = [f"Fact {n} is stated here plainly." for n in range(30)]
    chunks = chunk_document(markdown(" ".join(sentences)), strategy="recursive", size=40, overlap=10)

    assert len(chunks) > 2
    for previous, current in pairwise(chunks):
        shared = next(
            (
                current.text[:end]
                for end in range(len(current.text), 0, -1)
                if previous.text.endswith(current.text[:end])
            ),
            "",
        )
        assert shared, f"chunk {current.position} does not start with the end of chunk {previous.position}"
        assert 5 <= approximate_tokens(shared) <= 10
        # Whole sentences here, since every sentence is shorter than the overlap.
        assert shared.startswith("Fact ") and shared.endswith(".")


def test_overlap_does_not_cross_sections() -> None:
    rng = random.Random(3)
    body = " ".join(sentence(rng, 10) for _ in range(12))
    text = f"# First\n\n{body}\n\n# Second\n\n{body}"
    chunks = chunk_document(markdown(text), strategy="recursive", size=60, overlap=20)

    second = [chunk for chunk in chunks if chunk.heading_path == ("Second",)]
    assert second[0].text.startswith("# Second\n\n")
    assert all(chunk.token_count <= 60 for chunk in chunks)


def test_fixed_windows_advance_by_size_minus_overlap() -> None:
    words = [f"w{n:02d}" for n in range(100)]  # one token each
    chunks = chunk_document(markdown(" ".join(words)), strategy="fixed", size=10, overlap=2)

    # Windows start at words 0, 8, 16, ... 96: the one at 88 stops at word 97, so 96 is needed too.
    assert len(chunks) == 13
    assert [chunk.text.split()[0] for chunk in chunks] == [words[start] for start in range(0, 97, 8)]
    assert all(chunk.token_count == 10 for chunk in chunks[:-1])
    assert chunks[-1].text == "w96 w97 w98 w99"
    for previous, current in pairwise(chunks):
        assert previous.text.split()[-2:] == current.text.split()[:2]


def test_fixed_window_count_without_overlap() -> None:
    words = [f"w{n:02d}" for n in range(95)]
    chunks = chunk_document(markdown(" ".join(words)), strategy="fixed", size=10, overlap=0)
    assert len(chunks) == 10
    assert [word for chunk in chunks for word in chunk.text.split()] == words


def test_fixed_window_heading_path_is_the_one_in_effect_at_its_start() -> None:
    text = "lead in\n\n# A\n\none two three\n\n## B\n\nfour five six seven"
    chunks = chunk_document(markdown(text), strategy="fixed", size=4, overlap=0)
    assert [(chunk.heading_path, chunk.text) for chunk in chunks] == [
        ((), "lead in\n\n# A"),
        (("A",), "one two three"),
        (("A", "B"), "## B\n\nfour"),
        (("A", "B"), "five six seven"),
    ]


@pytest.mark.parametrize("strategy", ["recursive", "fixed"])
@pytest.mark.parametrize(("size", "overlap"), [(16, 0), (16, 8), (64, 0), (64, 8), (64, 32), (256, 32), (7, 6)])
def test_long_document_respects_size_and_loses_no_word(strategy: Strategy, size: int, overlap: int) -> None:
    text = generated_document(seed=size * 100 + overlap, sections=40)
    chunks = chunk_document(markdown(text), strategy=strategy, size=size, overlap=overlap)

    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text and chunk.text == chunk.text.strip()
        assert chunk.token_count == approximate_tokens(chunk.text)
        # The generator's words are at most 14 letters plus punctuation: none exceeds any size here.
        assert chunk.token_count <= size
    assert_chunks_cover_document(chunks, text)


@pytest.mark.parametrize("strategy", ["recursive", "fixed"])
def test_chunking_is_deterministic(strategy: Strategy) -> None:
    text = generated_document(seed=11)
    first = chunk_document(markdown(text), strategy=strategy, size=50, overlap=10)
    second = chunk_document(markdown(str(text)), strategy=strategy, size=50, overlap=10)
    assert first == second
    assert [chunk.digest for chunk in first] == [chunk.digest for chunk in second]


@pytest.mark.parametrize("strategy", ["recursive", "fixed"])
def test_editing_the_end_keeps_every_earlier_chunk(strategy: Strategy) -> None:
    text = generated_document(seed=5, sections=20)
    edited = text + "\nA paragraph added at the very end. It says something new.\n"
    before = chunk_document(markdown(text), strategy=strategy, size=48, overlap=8)
    after = chunk_document(markdown(edited), strategy=strategy, size=48, overlap=8)

    assert len(before) > 10
    assert after[: len(before) - 1] == before[:-1]
    assert after[-1] != before[-1]


def test_editing_a_later_section_keeps_earlier_sections_chunks() -> None:
    text = "# One\n\n" + " ".join(f"First section sentence {n}." for n in range(40))
    text += "\n\n# Two\n\nShort second section."
    edited = text.replace("Short second section.", "A rewritten second section, longer than before.")
    before = chunk_document(markdown(text), strategy="recursive", size=30, overlap=5)
    after = chunk_document(markdown(edited), strategy="recursive", size=30, overlap=5)

    assert [chunk for chunk in after if chunk.heading_path == ("One",)] == [
        chunk for chunk in before if chunk.heading_path == ("One",)
    ]
    assert before[-1].text == "# Two\n\nShort second section."
    assert after[-1].text == "# Two\n\nA rewritten second section, longer than before."


def test_crlf_line_endings_chunk_like_lf() -> None:
    text = generated_document(seed=2, sections=5)
    lf = chunk_document(markdown(text), strategy="recursive", size=40, overlap=5)
    crlf = chunk_document(markdown(text.replace("\n", "\r\n")), strategy="recursive", size=40, overlap=5)
    assert lf == crlf


@pytest.mark.parametrize("strategy", ["recursive", "fixed"])
def test_blank_document_has_no_chunks(strategy: Strategy) -> None:
    assert chunk_document(markdown(" \n\n\t"), strategy=strategy, size=10, overlap=0) == []


@pytest.mark.parametrize(
    ("size", "overlap", "message"),
    [
        (0, 0, "size must be at least 1"),
        (-5, 0, "size must be at least 1"),
        (10, 10, "overlap must be at least 0 and less than the size 10"),
        (10, 11, "overlap must be at least 0 and less than the size 10"),
        (10, -1, "overlap must be at least 0"),
    ],
)
def test_invalid_size_or_overlap_is_rejected(size: int, overlap: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chunk_document(markdown("text"), strategy="recursive", size=size, overlap=overlap)


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown chunking strategy 'semantic'"):
        chunk_document(markdown("text"), strategy="semantic", size=10, overlap=0)  # type: ignore[arg-type]


# --- context: the title and headings every chunk carries ------------------------------------------


def test_chunks_are_cut_at_headings_and_carry_title_and_section_headings() -> None:
    body = " ".join(f"Sentence {n} about installing the tool on a server." for n in range(40))
    document = Document(
        id="guide.md",
        source="docs/guide.md",
        text=f"# Guide\n\nIntro.\n\n## Install\n\n{body}\n\n### On Linux\n\nUse the package.\n\n## Usage\n\nRun it.",
        format="markdown",
        title="Guide",
    )

    chunks = chunk_document(document, strategy="recursive", size=64, overlap=8)

    by_section: dict[tuple[str, ...], list[Chunk]] = {}
    for chunk in chunks:
        by_section.setdefault(chunk.heading_path, []).append(chunk)
    assert list(by_section) == [("Guide",), ("Guide", "Install"), ("Guide", "Install", "On Linux"), ("Guide", "Usage")]
    # No chunk crosses a heading: each section's text stays in its own chunks.
    assert all("## Usage" not in chunk.text for chunk in by_section[("Guide", "Install")])
    install = by_section[("Guide", "Install")]
    assert len(install) > 2 and install[0].text.startswith("## Install")
    # A chunk from the middle of the section does not repeat its heading, but its context names it.
    assert not install[1].text.startswith("## Install")
    assert {chunk.context for chunk in install} == {"Guide > Install"}
    assert by_section[("Guide", "Install", "On Linux")][0].context == "Guide > Install > On Linux"
    assert install[1].embedding_text == f"Guide > Install\n\n{install[1].text}"


def test_the_context_is_part_of_the_digest_and_absent_without_title_or_headings() -> None:
    plain = chunk_document(markdown("Just text."), strategy="recursive", size=64, overlap=0)[0]
    assert plain.context == "" and plain.embedding_text == "Just text."
    titled = Document(id="a.md", source="a.md", text="Just text.", format="markdown", title="A title")
    with_title = chunk_document(titled, strategy="recursive", size=64, overlap=0)[0]
    assert with_title.context == "A title"
    assert with_title.text == plain.text and with_title.digest != plain.digest
