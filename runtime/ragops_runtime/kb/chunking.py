"""Cut one `Document` into the `Chunk`s that get embedded, indexed and retrieved.

Pure and deterministic: the same document always yields the same chunks, byte for byte, because
incremental knowledge-base builds reuse the embeddings of unchanged chunk texts. The module must not
read files, call tokenizers or models, or consult the clock or any global setting; sizes are measured
with `approximate_tokens`, never with a provider's tokenizer.

Headings are read as Markdown (ATX `#` and setext underlines, ignoring fenced code and a leading YAML
front matter block) whatever the document's format: HTML arrives with its headings already rewritten
as `#` lines, and reStructuredText titles are setext-shaped.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from ragops_runtime.kb.documents import Chunk, Document

Strategy = Literal["recursive", "fixed"]

_WORD = re.compile(r"[^\W_]+")
_SYMBOL = re.compile(r"[^\w\s]|_")
_NON_SPACE = re.compile(r"\S+")

# Fallback split points, coarsest first: sentences, then lines (lists and code have few full
# stops), then words. Every separator is whitespace, so token counts add up across pieces.
_SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+")
_LINE_BREAK = re.compile(r"[ \t]*\n\s*")
_WORD_BREAK = re.compile(r"\s+")
_FALLBACK_SPLITS = (_SENTENCE_BREAK, _LINE_BREAK, _WORD_BREAK)
# Where an overlap tail may start: after sentence punctuation or at a line start.
_TAIL_START = re.compile(r"(?:[.!?][\"')\]]?\s+|\n\s*)(?=\S)")

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")
# A line that cannot be the text of a setext heading: list items, quotes, tables, indented code.
_NOT_SETEXT_TEXT = re.compile(r"^(?: {4}|\t| {0,3}(?:[-+*>|]|\d+[.)])(?:\s|$))")


def approximate_tokens(text: str) -> int:
    """Estimate how many tokens a BPE tokenizer would produce for `text`, without one.

    Each run of letters and digits counts ceil(len / 4) tokens (a long word is several BPE tokens) and
    every other non-space character counts one. On English prose this lands within about 25 % of
    GPT-style BPE tokenizers (0.95 to 1.22 times GPT-3's count on licence texts, READMEs and
    docstrings), more often above than below, which errs on the safe side of a model's input limit.
    Code, URLs and non-Latin scripts can be further off. The count is additive across whitespace:
    a text counts the sum of its whitespace-separated pieces, which chunking relies on.
    """
    words = sum((len(word) + 3) // 4 for word in _WORD.findall(text))
    return words + len(_SYMBOL.findall(text))


def chunk_document(document: Document, *, strategy: Strategy, size: int, overlap: int) -> list[Chunk]:
    """Split `document` into chunks of at most `size` approximate tokens.

    `recursive` keeps Markdown sections apart and cuts an oversized section at paragraphs, then
    sentences, then lines, then words; consecutive chunks of one section share about `overlap` tokens.
    The first chunk of a section starts with its heading line(s). `fixed` slides a word-aligned window
    of `size` tokens over the whole text, advancing by `size - overlap` tokens (leaving out a window
    that would end where the previous one did); its heading path is the one in effect at its start.

    Words are never cut, so the only chunk that may exceed `size` is one made of a single word longer
    than `size` tokens (e.g. a base64 blob); its `token_count` reports the true estimate.

    Every chunk carries its `context` (the document title and its heading path, see `chunk_context`),
    which is embedded and indexed with it but not counted in `size`.
    """
    if strategy not in ("recursive", "fixed"):
        raise ValueError(f"unknown chunking strategy {strategy!r}: expected 'recursive' or 'fixed'")
    if size < 1:
        raise ValueError(f"chunk size must be at least 1 token, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be at least 0 and less than the size {size}, got {overlap}")
    # Documents from ingestion already use \n; a caller building one by hand may not.
    text = document.text.replace("\r\n", "\n").replace("\r", "\n")
    if strategy == "recursive":
        pieces = list(_recursive_chunks(text, size, overlap))
    else:
        pieces = list(_fixed_chunks(text, size, overlap))
    return [
        Chunk(
            document_id=document.id,
            position=position,
            text=chunk_text,
            token_count=approximate_tokens(chunk_text),
            heading_path=heading_path,
            context=chunk_context(document.title, heading_path),
        )
        for position, (chunk_text, heading_path) in enumerate(pieces)
    ]


CONTEXT_SEPARATOR = " > "


def chunk_context(title: str | None, heading_path: tuple[str, ...]) -> str:
    """The document title and the section headings enclosing a chunk, outermost first, as one line.

    A title repeated as the first heading (a page's <h1> or Markdown `#`) appears once.
    """
    parts = [title.strip()] if title and title.strip() else []
    for heading in heading_path:
        if not parts or heading != parts[-1]:
            parts.append(heading)
    return CONTEXT_SEPARATOR.join(parts)


@dataclass(frozen=True)
class _Heading:
    offset: int
    path: tuple[str, ...]


@dataclass
class _Section:
    path: tuple[str, ...]
    heading: str | None
    blocks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Piece:
    separator: str  # the whitespace that preceded this piece in the document
    text: str
    tokens: int


@dataclass
class _Outline:
    headings: list[_Heading]
    sections: list[_Section]


def _outline(text: str) -> _Outline:
    """Find the headings and cut the text into sections of blank-line separated blocks.

    A fenced code block is a single block whatever blank lines it holds, and a `# comment` inside it
    is not a heading.
    """
    lines = text.split("\n")
    headings: list[_Heading] = []
    sections = [_Section(path=(), heading=None)]
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)

    def flush() -> None:
        body = "\n".join(block).rstrip()
        if body.strip():
            sections[-1].blocks.append(body.lstrip("\n"))
        block.clear()

    def open_section(index: int, level: int, title: str, heading_text: str) -> None:
        flush()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        path = tuple(name for _, name in stack)
        headings.append(_Heading(offset=offsets[index], path=path))
        sections.append(_Section(path=path, heading=heading_text))

    index = 0
    if lines and lines[0].rstrip() == "---":
        # YAML front matter: its closing `---` would otherwise read as a setext underline.
        end = next((i for i in range(1, len(lines)) if lines[i].rstrip() in ("---", "...")), None)
        if end is not None:
            block.extend(lines[: end + 1])
            flush()
            index = end + 1

    fence: str | None = None
    while index < len(lines):
        line = lines[index]
        if fence is not None:
            block.append(line)
            closing = _FENCE_CLOSE.match(line)
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
                fence = None
            index += 1
            continue
        opening = _FENCE_OPEN.match(line)
        atx = _ATX_HEADING.match(line)
        underline = _SETEXT_UNDERLINE.match(line)
        if opening:
            fence = opening.group(1)
            block.append(line)
        elif atx and atx.group(2).strip():
            open_section(index, len(atx.group(1)), atx.group(2).strip(), line.strip())
        elif (
            underline
            and len(block) == 1
            and not _NOT_SETEXT_TEXT.match(block[0])
            and not _SETEXT_UNDERLINE.match(block[0])
        ):
            # Only a one-line paragraph directly above counts; anything else is a thematic break.
            title = block[0].strip()
            block.clear()
            open_section(index - 1, 1 if underline.group(1)[0] == "=" else 2, title, f"{title}\n{line.strip()}")
        elif line.strip():
            block.append(line)
        else:
            flush()
        index += 1
    flush()
    return _Outline(headings=headings, sections=sections)


def _recursive_chunks(text: str, size: int, overlap: int) -> Iterator[tuple[str, tuple[str, ...]]]:
    sections = _outline(text).sections
    carried: list[str] = []
    for index, section in enumerate(sections):
        heads = [*carried, section.heading] if section.heading else list(carried)
        carried = []
        if not section.blocks and heads and index + 1 < len(sections):
            following = sections[index + 1].path
            if len(following) > len(section.path) and following[: len(section.path)] == section.path:
                # A heading with nothing under it but subsections introduces the next chunk
                # instead of becoming a chunk of its own that retrieves nothing useful.
                carried = heads
                continue
        for chunk_text in _pack_section(heads, section.blocks, size, overlap):
            yield chunk_text, section.path


def _pack_section(heads: list[str], blocks: list[str], size: int, overlap: int) -> list[str]:
    head_tokens = approximate_tokens("\n\n".join(heads))
    # Keep every piece small enough that a new chunk can take it after the heading or the overlap
    # tail, so that neither is ever left alone in a chunk. A heading too long for that is split
    # like ordinary text.
    reserve = max(overlap, head_tokens if head_tokens < size else 0)
    budget = max(1, size - reserve)
    pieces: list[_Piece] = []
    for block in [*heads, *blocks]:
        pieces.extend(_split_to_budget(block, "\n\n" if pieces else "", budget, 0))

    chunks: list[str] = []
    current = ""
    current_tokens = 0
    for piece in pieces:
        if not current:
            current, current_tokens = piece.text, piece.tokens
        elif current_tokens + piece.tokens <= size:
            current += piece.separator + piece.text
            current_tokens += piece.tokens
        else:
            chunks.append(current.strip())
            tail = _tail(chunks[-1], min(overlap, size - piece.tokens))
            current = tail + piece.separator + piece.text if tail else piece.text
            current_tokens = approximate_tokens(tail) + piece.tokens
    if current.strip():
        chunks.append(current.strip())
    return chunks


def _split_to_budget(text: str, separator: str, budget: int, level: int) -> list[_Piece]:
    tokens = approximate_tokens(text)
    if tokens <= budget or level == len(_FALLBACK_SPLITS):
        return [_Piece(separator, text, tokens)]
    parts = _split(text, _FALLBACK_SPLITS[level])
    pieces: list[_Piece] = []
    for position, (part_separator, part) in enumerate(parts):
        pieces.extend(_split_to_budget(part, separator if position == 0 else part_separator, budget, level + 1))
    return pieces


def _split(text: str, pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    """Split at the pattern's matches, keeping each piece's preceding separator so joins are exact."""
    parts: list[tuple[str, str]] = []
    separator = ""
    start = 0
    for match in pattern.finditer(text):
        if match.start() > start:
            parts.append((separator, text[start : match.start()]))
            separator = match.group()
        else:
            separator += match.group()
        start = match.end()
    if start < len(text):
        parts.append((separator, text[start:]))
    return parts


def _tail(text: str, limit: int) -> str:
    """The end of `text` worth about `limit` tokens, in whole words, from a sentence start if possible."""
    if limit <= 0:
        return ""
    start: int | None = None
    total = 0
    for match in reversed(list(_NON_SPACE.finditer(text))):
        tokens = approximate_tokens(match.group())
        if total + tokens > limit:
            break
        total += tokens
        start = match.start()
    if start is None:
        return ""
    tail = text[start:]
    if _starts_sentence(text, start):
        return tail
    boundary = _TAIL_START.search(tail)
    # Starting at a sentence reads better, but not at the price of more than half the overlap.
    if boundary and approximate_tokens(tail[boundary.end() :]) * 2 >= limit:
        return tail[boundary.end() :]
    return tail


def _starts_sentence(text: str, start: int) -> bool:
    before = text[:start]
    kept = before.rstrip()
    if not kept or "\n" in before[len(kept) :]:
        return True
    return kept[-1] in ".!?" or (len(kept) > 1 and kept[-1] in "\"')]" and kept[-2] in ".!?")


def _fixed_chunks(text: str, size: int, overlap: int) -> Iterator[tuple[str, tuple[str, ...]]]:
    headings = _outline(text).headings
    heading_offsets = [heading.offset for heading in headings]

    words = list(_NON_SPACE.finditer(text))
    counts = [approximate_tokens(word.group()) for word in words]
    step = size - overlap
    start = 0
    previous_end = -1
    while start < len(words):
        end = start
        total = counts[start]
        while end + 1 < len(words) and total + counts[end + 1] <= size:
            end += 1
            total += counts[end]
        # With a small step a window can end where the previous one did: it would repeat a part
        # of that window and add nothing, so it is left out.
        if end > previous_end:
            window_start = words[start].start()
            heading_index = bisect.bisect_right(heading_offsets, window_start) - 1
            yield text[window_start : words[end].end()], headings[heading_index].path if heading_index >= 0 else ()
            previous_end = end
        if end == len(words) - 1:
            return
        advanced = 0
        following = start
        # Advance by `step` tokens but never past the window's end, so no word is skipped.
        while following <= end and advanced < step:
            advanced += counts[following]
            following += 1
        start = following
