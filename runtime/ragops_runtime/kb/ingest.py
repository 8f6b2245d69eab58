"""Turn the sources of a knowledge-base build (files, directories, globs, URLs) into `Document`s.

This module reads and extracts text: it decides which files are documents, what their stable ids are
and what text they hold. It must not chunk, embed or store anything, and it reports every file it
passes over (`IngestResult.skipped`) rather than dropping it silently, so a build can show what it left
out. Problems that would make the knowledge base wrong rather than smaller (a missing source, a
duplicate id, a malformed JSONL record, an HTTP error) raise `IngestError`.

Loading runs in two steps so that a build can skip the costly part for files it has seen before:
`read_sources` reads every file and URL and keys each HTML or reStructuredText text by its content
(`PendingExtraction.key`: the SHA-256 of the text, its format and the extractor's own code);
`extract_documents` then converts what is not in the given cache of earlier extractions and removes
the blocks repeated across each source's documents, over all of them, cached or not. Extraction is
a pure function of that key, so the documents are the same, byte for byte, with or without a cache.
`load_documents` does both without a cache.
"""

from __future__ import annotations

import codecs
import functools
import glob
import hashlib
import importlib.metadata
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from ragops_runtime.kb.cleaning import BoilerplateReport, drop_repeated_blocks, html_to_text, rst_to_text
from ragops_runtime.kb.documents import Document, DocumentFormat, MetadataValue

DEFAULT_MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
HTTP_TIMEOUT_SECONDS = 30.0

FORMATS_BY_EXTENSION: Mapping[str, DocumentFormat] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
}
FORMATS_BY_MEDIA_TYPE: Mapping[str, DocumentFormat] = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
    "text/x-rst": "rst",
    "application/jsonl": "jsonl",
    "application/x-ndjson": "jsonl",
    "application/x-jsonlines": "jsonl",
}

_SkipReporter = Callable[[str, str], None]

_BINARY_SNIFF_BYTES = 8192
_GLOB_MAGIC = re.compile(r"[*?[]")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_JSONL_KEYS = frozenset({"id", "text", "metadata", "title"})

_MARKDOWN_H1 = re.compile(r"^ {0,3}#[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")


class IngestError(Exception):
    """A problem that stops the build; the message names the source or document at fault."""


@dataclass(frozen=True)
class SkippedSource:
    source: str
    reason: str


@dataclass(frozen=True)
class Extract:
    """What converting one HTML or reStructuredText text yields: its readable text, title and dropped markup."""

    text: str
    title: str | None
    dropped_chars: int = 0


@dataclass(frozen=True)
class PendingExtraction:
    """A document read but not converted yet; `key` identifies its conversion (see the module docstring)."""

    document_id: str
    source: str
    format: DocumentFormat
    text: str
    key: str


_Item = Document | PendingExtraction | SkippedSource


@dataclass(frozen=True)
class _SourceItems:
    source: str
    items: list[_Item]
    must_yield: bool
    """A directory or glob that yields no document is an error; a single file or URL is only skipped."""


@dataclass(frozen=True)
class SourceReading:
    """Every source read, in order, before any conversion: documents, pending conversions and skips."""

    sources: tuple[str, ...]
    strict: bool
    read: tuple[_SourceItems, ...]

    @property
    def extraction_keys(self) -> list[str]:
        return list(
            dict.fromkeys(
                item.key for source in self.read for item in source.items if isinstance(item, PendingExtraction)
            )
        )


@dataclass(frozen=True)
class IngestResult:
    documents: list[Document]
    skipped: list[SkippedSource]
    boilerplate: BoilerplateReport = field(default_factory=BoilerplateReport)
    extraction_keys: dict[str, str] = field(default_factory=dict)
    """Document id -> its conversion's key, for the documents that were HTML or reStructuredText."""
    extracted: dict[str, Extract] = field(default_factory=dict)
    """The conversions done now (not found in the cache given), by key: what a cache should keep."""
    reused_extractions: int = 0
    """Documents whose conversion came from the cache given."""


def load_documents(
    sources: Sequence[str],
    *,
    strict: bool = False,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    http_client: httpx.Client | None = None,
) -> IngestResult:
    """Load every document named by `sources`, sorted by id.

    A source is an http(s) URL, a file, a directory (walked recursively; entries named `..*`, the
    internals of a Kubernetes ConfigMap mount, are ignored and symlinks are followed) or a glob
    (`**` recursive). Files that cannot be documents are reported in `skipped`, or raise with
    `strict=True`. `http_client` is used for URLs and left open; without one a client is created
    and closed here. Boilerplate is removed (see `cleaning`): navigation markup from HTML, and
    blocks repeated across the documents of one source; `boilerplate` counts what went.
    """
    reading = read_sources(sources, strict=strict, max_document_bytes=max_document_bytes, http_client=http_client)
    return extract_documents(reading, {})


def read_sources(
    sources: Sequence[str],
    *,
    strict: bool = False,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    http_client: httpx.Client | None = None,
) -> SourceReading:
    """The first step of `load_documents`: read every source; convert nothing that a cache could hold."""
    if isinstance(sources, str):
        raise TypeError("sources must be a sequence of strings, not a single string")
    if max_document_bytes < 1:
        raise ValueError(f"max_document_bytes must be at least 1, got {max_document_bytes}")
    if not sources:
        raise IngestError("no sources given")
    with _Loader(strict=strict, max_bytes=max_document_bytes, http_client=http_client) as loader:
        read = tuple(loader.load(source) for source in sources)
    return SourceReading(sources=tuple(sources), strict=strict, read=read)


def extract_documents(reading: SourceReading, cached: Mapping[str, Extract]) -> IngestResult:
    """The second step of `load_documents`: convert what `cached` does not hold, drop repeated blocks.

    `cached` maps conversion keys to earlier conversions (any subset; wrong keys are simply
    unused). The result lists the conversions done now in `extracted`.
    """
    origins: dict[str, str] = {}
    documents: list[Document] = []
    skipped: list[SkippedSource] = []
    keys: dict[str, str] = {}
    extracted: dict[str, Extract] = {}
    reused = markup_chars = repeated_blocks = repeated_chars = 0
    for source in reading.read:
        loaded: list[Document] = []
        for item in source.items:
            if isinstance(item, SkippedSource):
                skipped.append(item)
                continue
            if isinstance(item, Document):
                loaded.append(item)
                continue
            extract = cached.get(item.key) or extracted.get(item.key)
            if extract is None:
                extract = extracted[item.key] = _extract(item.text, item.format)
            else:
                reused += 1
            markup_chars += extract.dropped_chars
            if not extract.text.strip():
                if reading.strict:
                    raise IngestError(f"{item.source}: empty")
                skipped.append(SkippedSource(item.source, "empty"))
                continue
            keys[item.document_id] = item.key
            loaded.append(
                Document(
                    id=item.document_id, source=item.source, text=extract.text, format=item.format, title=extract.title
                )
            )
        if source.must_yield and not loaded:
            raise IngestError(f"source {source.source} yielded no documents")
        cleaned, blocks, chars = _without_repeated_blocks(loaded)
        repeated_blocks += blocks
        repeated_chars += chars
        for document in cleaned:
            first = origins.get(document.id)
            if first is not None:
                raise IngestError(f"duplicate document id {document.id!r} from sources {first} and {document.source}")
            origins[document.id] = document.source
            documents.append(document)
    if not documents:
        raise IngestError(f"sources {', '.join(reading.sources)} yielded no documents")
    report = BoilerplateReport(
        markup_chars=markup_chars,
        repeated_blocks=repeated_blocks,
        repeated_chars=repeated_chars,
        kept_chars=sum(len(document.text) for document in documents),
    )
    return IngestResult(
        documents=sorted(documents, key=lambda document: document.id),
        skipped=skipped,
        boilerplate=report,
        extraction_keys={document.id: keys[document.id] for document in documents if document.id in keys},
        extracted=extracted,
        reused_extractions=reused,
    )


def extraction_key(text: str, document_format: DocumentFormat) -> str:
    """Identity of converting `text` from `document_format`: equal keys, equal `Extract`s."""
    digest = hashlib.sha256(_extractor_fingerprint().encode())
    digest.update(f"\x1f{document_format}\x1f".encode())
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


@functools.cache
def _extractor_fingerprint() -> str:
    """The conversion code's identity: `cleaning`'s source and the HTML parser's version.

    A change to either changes every key, so a cache never returns what older code extracted.
    Without a readable source file (an unusual install) each process gets a fingerprint of its own.
    """
    from ragops_runtime.kb import cleaning

    try:
        code = Path(cleaning.__file__).read_bytes()
    except OSError:
        code = os.urandom(16)
    parser = importlib.metadata.version("selectolax")
    return hashlib.sha256(code + f"\x1fselectolax {parser}".encode()).hexdigest()


def _extract(text: str, document_format: DocumentFormat) -> Extract:
    if document_format == "html":
        clean = html_to_text(text)
        return Extract(text=clean.text, title=clean.title, dropped_chars=clean.dropped_chars)
    converted, title = rst_to_text(text)
    return Extract(text=converted, title=title)


def _without_repeated_blocks(documents: list[Document]) -> tuple[list[Document], int, int]:
    """The documents of one source without the blocks most of them share (JSONL records are left alone)."""
    pages = [index for index, document in enumerate(documents) if document.format != "jsonl"]
    cleaned, blocks, chars = drop_repeated_blocks([documents[index].text for index in pages])
    if not blocks:
        return documents, 0, 0
    result = list(documents)
    for index, text in zip(pages, cleaned, strict=True):
        result[index] = replace(documents[index], text=text)
    return [document for document in result if document.text.strip()], blocks, chars


class _Unreadable(Exception):
    """Raised inside this module when a file or response cannot be a document; becomes a skip."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Loader:
    strict: bool
    max_bytes: int
    http_client: httpx.Client | None
    _items: list[_Item] = field(default_factory=list, init=False)
    """What the source being loaded yielded so far, skips included, in the order met."""
    _owned_client: httpx.Client | None = field(default=None, init=False)

    def __enter__(self) -> _Loader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._owned_client is not None:
            self._owned_client.close()

    def load(self, source: str) -> _SourceItems:
        self._items = []
        must_yield = False
        if _URL_SCHEME.match(source):
            self._load_url(source)
        elif (path := Path(source)).is_dir():
            must_yield = True
            self._load_many(_walk_directory(path, self._skip))
        elif path.exists():
            self._load_named_file(path)
        elif _GLOB_MAGIC.search(source):
            must_yield = True
            self._load_many(_expand_glob(source))
        else:
            raise IngestError(f"source {source} does not exist")
        return _SourceItems(source=source, items=self._items, must_yield=must_yield)

    def _skip(self, source: str, reason: str) -> None:
        if self.strict:
            raise IngestError(f"{source}: {reason}")
        self._items.append(SkippedSource(source=source, reason=reason))

    def _load_many(self, files: list[tuple[Path, str]]) -> None:
        for path, document_id in files:
            document_format = FORMATS_BY_EXTENSION.get(path.suffix.lower())
            if document_format is None:
                self._skip(str(path), _unsupported_extension(path))
                continue
            self._load_file(path, document_id, document_format)

    def _load_named_file(self, path: Path) -> None:
        if not path.is_file():
            raise IngestError(f"source {path} is not a regular file")
        document_format = FORMATS_BY_EXTENSION.get(path.suffix.lower())
        if document_format is None:
            supported = ", ".join(FORMATS_BY_EXTENSION)
            raise IngestError(f"source {path}: {_unsupported_extension(path)} (supported: {supported})")
        self._load_file(path, path.name, document_format)

    def _load_file(self, path: Path, document_id: str, document_format: DocumentFormat) -> None:
        if document_format == "jsonl":
            # A JSONL export holds many documents: the size limit applies to each record, and the
            # file is streamed rather than read whole, however large it is.
            try:
                self._items.extend(self._jsonl_documents(_jsonl_lines(path), str(path)))
            except _Unreadable as unreadable:
                self._skip(str(path), unreadable.reason)
            return
        try:
            text = _read_text_file(path, self.max_bytes)
        except _Unreadable as unreadable:
            self._skip(str(path), unreadable.reason)
            return
        self._document(text, document_id, str(path), document_format)

    def _document(self, text: str, document_id: str, source: str, document_format: DocumentFormat) -> None:
        if not text.strip():
            self._skip(source, "empty")
        elif document_format == "jsonl":
            self._items.extend(self._jsonl_documents(enumerate(text.split("\n"), start=1), source))
        elif document_format in ("html", "rst"):
            # Converted in the second step, unless a cache holds the conversion already.
            key = extraction_key(text, document_format)
            self._items.append(PendingExtraction(document_id, source, document_format, text, key))
        else:
            title = _markdown_title(text) if document_format == "markdown" else None
            self._items.append(Document(id=document_id, source=source, text=text, format=document_format, title=title))

    def _jsonl_documents(self, lines: Iterable[tuple[int, str]], source: str) -> list[Document]:
        documents: list[Document] = []
        lines_by_id: dict[str, int] = {}
        for number, line in lines:
            if not line.strip():
                continue
            if len(line.encode("utf-8")) > self.max_bytes:
                self._skip(f"{source}:{number}", f"larger than {self.max_bytes} bytes")
                continue
            document = _jsonl_record(line, source, number)
            first = lines_by_id.get(document.id)
            if first is not None:
                raise IngestError(
                    f"{source} line {number}: duplicate document id {document.id!r} (first on line {first})"
                )
            lines_by_id[document.id] = number
            if not document.text.strip():
                self._skip(f"{source}:{number}", "empty")
                continue
            documents.append(document)
        return documents

    def _load_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise IngestError(f"source {url}: unsupported URL (only http and https URLs are fetched)")
        try:
            body, media_type, charset = self._fetch(url)
        except _Unreadable as unreadable:
            self._skip(url, unreadable.reason)
            return
        document_format = FORMATS_BY_MEDIA_TYPE.get(media_type)
        by_extension = FORMATS_BY_EXTENSION.get(PurePosixPath(parts.path).suffix.lower())
        # Servers label most text they do not recognise text/plain (raw Markdown from a Git host,
        # for one), so a known extension says more than that generic type does.
        if by_extension is not None and document_format in (None, "text"):
            document_format = by_extension
        if document_format is None:
            raise IngestError(f"source {url}: unsupported content type {media_type or '(none)'}")
        try:
            text = _decode(body, charset)
        except _Unreadable as unreadable:
            self._skip(url, unreadable.reason)
            return
        self._document(text, url, url, document_format)

    def _fetch(self, url: str) -> tuple[bytes, str, str | None]:
        client = self.http_client if self.http_client is not None else self._own_client()
        try:
            with client.stream("GET", url) as response:
                if not response.is_success:
                    raise IngestError(f"fetching {url} failed: HTTP {response.status_code} {response.reason_phrase}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise _Unreadable(f"larger than {self.max_bytes} bytes")
                body = bytearray()
                for piece in response.iter_bytes():
                    body.extend(piece)
                    if len(body) > self.max_bytes:
                        raise _Unreadable(f"larger than {self.max_bytes} bytes")
                media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                return bytes(body), media_type, response.charset_encoding
        except httpx.HTTPError as error:
            raise IngestError(f"fetching {url} failed: {type(error).__name__}: {error}") from error

    def _own_client(self) -> httpx.Client:
        if self._owned_client is None:
            self._owned_client = httpx.Client(timeout=HTTP_TIMEOUT_SECONDS, follow_redirects=True)
        return self._owned_client


def _unsupported_extension(path: Path) -> str:
    return f"unsupported extension {path.suffix.lower() or '(none)'}"


def _walk_directory(root: Path, skip: _SkipReporter) -> list[tuple[Path, str]]:
    """Every file under `root` with its id, the path relative to `root` in POSIX form."""
    found: list[tuple[Path, str]] = []

    def visit(directory: Path, relative: PurePosixPath, ancestors: frozenset[str]) -> None:
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            skip(str(directory), f"unreadable directory: {error.strerror or error}")
            return
        for entry in entries:
            # Kubernetes mounts a ConfigMap as `..data` -> `..<timestamp>/` plus one symlink per key
            # into it; reading the `..` entries too would load every key twice.
            if entry.name.startswith(".."):
                continue
            path = directory / entry.name
            if entry.is_dir():
                real = os.path.realpath(path)
                if real in ancestors:
                    skip(str(path), "symlink loop")
                    continue
                visit(path, relative / entry.name, ancestors | {real})
            elif entry.is_file():
                found.append((path, str(relative / entry.name)))
            elif entry.is_symlink():
                skip(str(path), "broken symlink")
            else:
                skip(str(path), "not a regular file")

    visit(root, PurePosixPath(), frozenset({os.path.realpath(root)}))
    return found


def _expand_glob(pattern: str) -> list[tuple[Path, str]]:
    """Files matching `pattern`, each with its path relative to the pattern's fixed leading directory."""
    base = Path(*_leading_literal_parts(Path(pattern).parts))
    found: list[tuple[Path, str]] = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if not path.is_file():
            continue
        relative = path.relative_to(base)
        if any(part.startswith("..") for part in relative.parts):
            continue
        found.append((path, relative.as_posix()))
    return found


def source_id(location: str, sources: Sequence[str]) -> str:
    """What a document's `location` is called where clients see it: never a path of the server.

    A URL as it is; a file by its path relative to the source (of a build's `sources`) it was
    found under, the way document ids are made (a named file by its name, a glob's match relative
    to the glob's fixed directory); anything else by its last path component. A source itself is
    shown as its own id (`source_id(s, [s])`): a directory by its name.
    """
    if _URL_SCHEME.match(location):
        return location
    path = PurePosixPath(location)
    shortest: str | None = None
    for source in sources:
        if _URL_SCHEME.match(source):
            continue
        if _GLOB_MAGIC.search(source):
            base = PurePosixPath(*_leading_literal_parts(PurePosixPath(source).parts))
        else:
            base = PurePosixPath(source)
        if path == base:
            candidate = path.name
        elif base in path.parents:
            candidate = path.relative_to(base).as_posix()
        else:
            continue
        if shortest is None or len(candidate) < len(shortest):
            shortest = candidate
    return shortest or path.name or location


def _leading_literal_parts(parts: tuple[str, ...]) -> list[str]:
    literal: list[str] = []
    for part in parts[:-1]:
        if _GLOB_MAGIC.search(part):
            break
        literal.append(part)
    return literal


def _read_text_file(path: Path, max_bytes: int) -> str:
    try:
        # stat first: a file far over the limit is never opened, let alone read.
        if path.stat().st_size > max_bytes:
            raise _Unreadable(f"larger than {max_bytes} bytes")
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise _Unreadable(f"unreadable: {error.strerror or error}") from error
    if len(data) > max_bytes:  # it grew after the stat
        raise _Unreadable(f"larger than {max_bytes} bytes")
    return _decode(data, None)


def _jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a JSONL file, streamed; decoding rules as for whole files."""
    try:
        with path.open("rb") as file:
            if b"\x00" in file.read(_BINARY_SNIFF_BYTES):
                raise _Unreadable("binary file")
            file.seek(0)
            for number, raw in enumerate(file, start=1):
                yield number, _decode(raw, None).rstrip("\n")
    except OSError as error:
        raise _Unreadable(f"unreadable: {error.strerror or error}") from error


def _decode(data: bytes, charset: str | None) -> str:
    if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        raise _Unreadable("binary file")
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except LookupError as error:
        raise _Unreadable(f"unknown charset {charset}") from error
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as error:
        raise _Unreadable("not UTF-8 text" if codec == "utf-8" else f"not valid {charset} text") from error
    # Universal newlines, as text-mode open() would give, so a checkout with CRLF line endings has
    # the same digest and the same chunks as one with LF; a BOM is an encoding detail, not text.
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _jsonl_record(line: str, source: str, number: int) -> Document:
    where = f"{source} line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise IngestError(f"{where}: invalid JSON: {error.msg} (column {error.colno})") from error
    if not isinstance(record, dict):
        raise IngestError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - _JSONL_KEYS)
    if unknown:
        # A misspelt "metadata" or "title" would otherwise vanish without a trace.
        raise IngestError(f"{where}: unknown keys {', '.join(unknown)} (allowed: id, text, metadata, title)")
    document_id = record.get("id")
    if not isinstance(document_id, str) or not document_id.strip():
        raise IngestError(f"{where}: 'id' must be a non-empty string")
    text = record.get("text")
    if not isinstance(text, str):
        raise IngestError(f"{where}: 'text' must be a string")
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        raise IngestError(f"{where}: 'title' must be a string")
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise IngestError(f"{where}: 'metadata' must be an object")
    checked: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise IngestError(f"{where}: metadata {key!r} must be a string, number, boolean or null")
        checked[key] = value
    return Document(id=document_id, source=source, text=text, format="jsonl", title=title, metadata=checked)


def _markdown_title(text: str) -> str | None:
    """The first level-1 ATX heading outside fenced code, where a `# comment` is not a heading."""
    fence: str | None = None
    for line in text.split("\n"):
        if fence is not None:
            closing = _FENCE_CLOSE.match(line)
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
                fence = None
            continue
        opening = _FENCE_OPEN.match(line)
        if opening:
            fence = opening.group(1)
            continue
        heading = _MARKDOWN_H1.match(line)
        if heading and heading.group(1).strip():
            return heading.group(1).strip()
    return None
