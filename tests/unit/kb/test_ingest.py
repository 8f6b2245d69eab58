"""Ingestion against real files in tmp_path and a real HTTP server on 127.0.0.1; nothing is mocked."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ragops_runtime.kb.ingest import IngestError, SkippedSource, load_documents

HTML_PAGE = """<!doctype html>
<html>
<head><title>  The   Guide </title><style>p { color: red }</style><script>var hidden = 1;</script></head>
<body>
<nav><a href="/">Home</a> <a href="/docs">Docs</a></nav>
<script>var alsoHidden = 2;</script>
<h1>Install <em>ragops</em></h1>
<p>First
paragraph with <b>bold</b> and<br>a line break.</p>
<!-- a comment is not text -->
<ul><li>one</li><li><p>two</p><ul><li>nested</li></ul></li></ul>
<ol><li>first</li><li>second</li></ol>
<h2>Configure</h2>
<div>Loose text<p>Inner paragraph.</p></div>
<pre>
# a comment in code
value = 1
</pre>
<table><tr><th>key</th><th>value</th></tr><tr><td>size</td><td>512&nbsp;tokens</td></tr></table>
</body>
</html>
"""

HTML_TEXT = """# Install ragops

First paragraph with bold and
a line break.

- one

- two

- nested

1. first

2. second

## Configure

Loose text

Inner paragraph.

```
# a comment in code
value = 1
```

key | value

size | 512 tokens"""


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def make_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    for relative, content in files.items():
        write(root / relative, content)
    return root


def ids(sources: list[str]) -> list[str]:
    return [document.id for document in load_documents(sources).documents]


# --- directories ---------------------------------------------------------------------------------


def test_directory_walk_gives_relative_posix_ids_formats_and_titles(tmp_path: Path) -> None:
    docs = make_tree(
        tmp_path / "docs",
        {
            "guides/install.md": "Intro line.\n\n# Install ragops\n\nRun it.\n",
            "guides/linux/setup.markdown": "## Only a subheading\n",
            "index.html": "<html><head><title>Home</title></head><body><p>Welcome.</p></body></html>",
            "notes.txt": "# not a title in plain text\n",
            "reference/api.rst": "API\n===\n\nCalls.\n",
            "data/records.jsonl": '{"id": "record-1", "text": "Record text."}\n',
        },
    )

    result = load_documents([str(docs)])

    assert [(d.id, d.format, d.title) for d in result.documents] == [
        ("guides/install.md", "markdown", "Install ragops"),
        ("guides/linux/setup.markdown", "markdown", None),
        ("index.html", "html", "Home"),
        ("notes.txt", "text", None),
        ("record-1", "jsonl", None),
        ("reference/api.rst", "rst", "API"),
    ]
    install = result.documents[0]
    assert install.text == "Intro line.\n\n# Install ragops\n\nRun it.\n"
    assert install.source == str(docs / "guides" / "install.md")
    assert result.documents[4].source == str(docs / "data" / "records.jsonl")
    assert result.skipped == []


def test_directory_walk_skips_unreadable_files_and_reports_why(tmp_path: Path) -> None:
    docs = make_tree(
        tmp_path / "docs",
        {
            "good.md": "# Good\n",
            "big.md": "x" * 101,
            "blank.md": "  \n\t\n",
            "binary.txt": b"text\x00more",
            "latin1.txt": "café".encode("latin-1"),
            "logo.png": b"\x89PNG",
            "Makefile": "all:\n",
            "empty.html": "<html><body><script>only()</script></body></html>",
        },
    )

    result = load_documents([str(docs)], max_document_bytes=100)

    assert [d.id for d in result.documents] == ["good.md"]
    assert result.skipped == [
        SkippedSource(str(docs / "Makefile"), "unsupported extension (none)"),
        SkippedSource(str(docs / "big.md"), "larger than 100 bytes"),
        SkippedSource(str(docs / "binary.txt"), "binary file"),
        SkippedSource(str(docs / "blank.md"), "empty"),
        SkippedSource(str(docs / "empty.html"), "empty"),
        SkippedSource(str(docs / "latin1.txt"), "not UTF-8 text"),
        SkippedSource(str(docs / "logo.png"), "unsupported extension .png"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("big.md", "x" * 101, "larger than 100 bytes"),
        ("blank.md", "\n\n", "empty"),
        ("binary.txt", b"\x00\x01", "binary file"),
        ("latin1.txt", "café".encode("latin-1"), "not UTF-8 text"),
        ("logo.png", b"\x89PNG", "unsupported extension .png"),
    ],
)
def test_strict_turns_every_skip_into_an_error(tmp_path: Path, name: str, content: str | bytes, reason: str) -> None:
    docs = make_tree(tmp_path / "docs", {"good.md": "Good.", name: content})

    assert load_documents([str(docs)], max_document_bytes=100).skipped == [SkippedSource(str(docs / name), reason)]
    with pytest.raises(IngestError, match=exactly(f"{docs / name}: {reason}")):
        load_documents([str(docs)], max_document_bytes=100, strict=True)


def test_size_limit_is_inclusive(tmp_path: Path) -> None:
    docs = make_tree(tmp_path / "docs", {"fits.md": "x" * 100, "over.md": "x" * 101})
    result = load_documents([str(docs)], max_document_bytes=100)
    assert [d.id for d in result.documents] == ["fits.md"]
    assert [s.source for s in result.skipped] == [str(docs / "over.md")]


def test_a_huge_file_is_skipped_from_its_size_alone(tmp_path: Path) -> None:
    docs = make_tree(tmp_path / "docs", {"good.md": "Good."})
    with (docs / "huge.md").open("wb") as huge:
        huge.truncate(64 * 1024 * 1024)  # sparse: reading it would return 64 MiB of NULs
    result = load_documents([str(docs)])
    assert result.skipped == [SkippedSource(str(docs / "huge.md"), "larger than 10485760 bytes")]


def test_configmap_volume_mount_yields_each_key_once(tmp_path: Path) -> None:
    # The layout kubelet's atomic writer creates for a ConfigMap volume.
    mount = tmp_path / "knowledge"
    payload = mount / "..2024_01_01_00_00_00.123456789"
    make_tree(payload, {"guide.md": "# Guide\n\nRead me.\n", "faq.txt": "Questions.\n"})
    (mount / "..data").symlink_to(payload.name)
    for key in ("guide.md", "faq.txt"):
        (mount / key).symlink_to(f"..data/{key}")

    result = load_documents([str(mount)])

    assert [(d.id, d.source, d.title) for d in result.documents] == [
        ("faq.txt", str(mount / "faq.txt"), None),
        ("guide.md", str(mount / "guide.md"), "Guide"),
    ]
    assert result.skipped == []
    assert ids([str(mount / "*")]) == ["faq.txt", "guide.md"]


def test_symlinked_directories_are_followed_and_loops_reported(tmp_path: Path) -> None:
    make_tree(tmp_path / "shared", {"common.md": "Common."})
    docs = make_tree(tmp_path / "docs", {"a.md": "A."})
    (docs / "shared").symlink_to(tmp_path / "shared")
    (docs / "loop").symlink_to(docs)
    (docs / "dangling.md").symlink_to(tmp_path / "nowhere.md")

    result = load_documents([str(docs)])

    assert [d.id for d in result.documents] == ["a.md", "shared/common.md"]
    assert result.skipped == [
        SkippedSource(str(docs / "dangling.md"), "broken symlink"),
        SkippedSource(str(docs / "loop"), "symlink loop"),
    ]


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    with pytest.raises(IngestError, match=exactly(f"source {tmp_path / 'docs'} yielded no documents")):
        load_documents([str(tmp_path / "docs")])


def test_directory_with_only_skipped_files_is_an_error(tmp_path: Path) -> None:
    docs = make_tree(tmp_path / "docs", {"logo.png": b"\x89PNG", "blank.md": " "})
    with pytest.raises(IngestError, match=exactly(f"source {docs} yielded no documents")):
        load_documents([str(docs)])


# --- single files ------------------------------------------------------------------------------


def test_single_file_id_is_its_name(tmp_path: Path) -> None:
    path = write(tmp_path / "docs" / "guides" / "install.md", "# Install\n")
    result = load_documents([str(path)])
    assert [(d.id, d.source, d.title, d.format) for d in result.documents] == [
        ("install.md", str(path), "Install", "markdown")
    ]


@pytest.mark.parametrize(("name", "reason"), [("logo.png", "unsupported extension .png"), ("LICENSE", "(none)")])
def test_named_file_with_unsupported_extension_is_an_error(tmp_path: Path, name: str, reason: str) -> None:
    path = write(tmp_path / name, "content")
    with pytest.raises(IngestError, match=rf"^{re.escape(f'source {path}: ')}.*{reason}.*\(supported: \.md, "):
        load_documents([str(path)])


def test_named_unreadable_file_is_skipped_unless_strict(tmp_path: Path) -> None:
    good = write(tmp_path / "good.md", "Good.")
    binary = write(tmp_path / "binary.md", b"\x00")
    result = load_documents([str(good), str(binary)])
    assert [d.id for d in result.documents] == ["good.md"]
    assert result.skipped == [SkippedSource(str(binary), "binary file")]
    with pytest.raises(IngestError, match=exactly(f"{binary}: binary file")):
        load_documents([str(good), str(binary)], strict=True)


def test_sources_yielding_nothing_at_all_are_an_error(tmp_path: Path) -> None:
    blank = write(tmp_path / "blank.md", "\n")
    with pytest.raises(IngestError, match="yielded no documents"):
        load_documents([str(blank)])


def test_crlf_and_byte_order_mark_are_normalised(tmp_path: Path) -> None:
    path = write(tmp_path / "windows.md", "\ufeff# Title\r\n\r\nBody.\r\n".encode())
    (document,) = load_documents([str(path)]).documents
    assert document.text == "# Title\n\nBody.\n"
    assert document.title == "Title"


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("# First\n\n# Second\n", "First"),
        ("## Sub\n\n# Main #\n", "Main"),
        ("```bash\n# install it\n```\n\n# Real\n", "Real"),
        ("#hashtag\n\nNo heading.\n", None),
        ("Setext\n======\n", None),
    ],
)
def test_markdown_title_is_the_first_level_one_heading(tmp_path: Path, text: str, title: str | None) -> None:
    path = write(tmp_path / "doc.md", text)
    assert load_documents([str(path)]).documents[0].title == title


def test_html_keeps_readable_text_with_markdown_headings(tmp_path: Path) -> None:
    path = write(tmp_path / "page.html", HTML_PAGE)
    (document,) = load_documents([str(path)]).documents
    assert document.format == "html"
    assert document.title == "Install ragops"  # the page's own <h1>, not the site-flavoured <title>
    assert document.text == HTML_TEXT


def test_html_title_falls_back_to_first_h1(tmp_path: Path) -> None:
    path = write(tmp_path / "page.htm", "<body><p>Lead.</p><h1>Main   Topic</h1><h1>Other</h1></body>")
    (document,) = load_documents([str(path)]).documents
    assert document.title == "Main Topic"
    assert document.text == "Lead.\n\n# Main Topic\n\n# Other"


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl_gives_one_document_per_record(tmp_path: Path) -> None:
    records = [
        {"id": "b", "text": "Second.", "metadata": {"lang": "en", "year": 2024, "score": 0.5, "draft": False}},
        {"id": "a", "text": "First.", "title": "Alpha", "metadata": {"note": None}},
        {"id": "c", "text": "   "},
    ]
    path = write(
        tmp_path / "records.jsonl", "\n".join(json.dumps(r) for r in records[:2]) + "\n\n" + json.dumps(records[2])
    )

    result = load_documents([str(path)])

    assert [(d.id, d.source, d.format, d.title, dict(d.metadata)) for d in result.documents] == [
        ("a", str(path), "jsonl", "Alpha", {"note": None}),
        ("b", str(path), "jsonl", None, {"lang": "en", "year": 2024, "score": 0.5, "draft": False}),
    ]
    assert result.skipped == [SkippedSource(f"{path}:4", "empty")]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": "x", "text": ', "invalid JSON"),
        ('["x", "text"]', "expected a JSON object, got list"),
        ('{"text": "no id"}', "'id' must be a non-empty string"),
        ('{"id": 7, "text": "numeric id"}', "'id' must be a non-empty string"),
        ('{"id": "x"}', "'text' must be a string"),
        ('{"id": "x", "text": 5}', "'text' must be a string"),
        ('{"id": "x", "text": "t", "title": 1}', "'title' must be a string"),
        ('{"id": "x", "text": "t", "metadata": []}', "'metadata' must be an object"),
        ('{"id": "x", "text": "t", "metadata": {"tags": ["a"]}}', "metadata 'tags' must be a string, number"),
        ('{"id": "x", "text": "t", "metdata": {}}', "unknown keys metdata"),
        ('{"id": "ok", "text": "again"}', "duplicate document id 'ok' \\(first on line 1\\)"),
    ],
)
def test_a_bad_jsonl_line_is_an_error_naming_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = write(tmp_path / "records.jsonl", '{"id": "ok", "text": "fine"}\n' + line + "\n")
    with pytest.raises(IngestError, match=f"^{re.escape(str(path))} line 2: {problem}"):
        load_documents([str(path)])  # not strict: dropping a record silently would lose data


# --- globs -------------------------------------------------------------------------------------


@pytest.fixture
def glob_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return make_tree(
        tmp_path,
        {
            "top.md": "Top.",
            "docs/a.md": "A.",
            "docs/b.txt": "B.",
            "docs/logo.png": b"\x89PNG",
            "docs/deep/er/c.md": "C.",
            "docs/.hidden/h.md": "Hidden.",
        },
    )


def test_recursive_glob_ids_are_relative_to_its_literal_prefix(glob_tree: Path) -> None:
    result = load_documents(["docs/**/*.md"])
    assert [(d.id, d.source) for d in result.documents] == [
        ("a.md", "docs/a.md"),
        ("deep/er/c.md", "docs/deep/er/c.md"),
    ]
    assert ids([str(glob_tree / "docs" / "**" / "*.md")]) == ["a.md", "deep/er/c.md"]


def test_glob_without_directory_is_relative_to_the_working_directory(glob_tree: Path) -> None:
    assert ids(["*.md"]) == ["top.md"]
    assert ids(["docs/?.*"]) == ["a.md", "b.txt"]


def test_glob_skips_unsupported_files_it_matches(glob_tree: Path) -> None:
    result = load_documents(["docs/*"])
    assert [d.id for d in result.documents] == ["a.md", "b.txt"]
    assert result.skipped == [SkippedSource("docs/logo.png", "unsupported extension .png")]


@pytest.mark.parametrize("pattern", ["docs/*.rst", "docs/*.png", "nowhere/**/*.md"])
def test_glob_yielding_no_documents_is_an_error(glob_tree: Path, pattern: str) -> None:
    with pytest.raises(IngestError, match=exactly(f"source {pattern} yielded no documents")):
        load_documents([pattern])


def test_a_literal_path_with_glob_characters_is_a_file(tmp_path: Path) -> None:
    path = write(tmp_path / "notes [draft].md", "Draft.")
    assert ids([str(path)]) == ["notes [draft].md"]


# --- errors across sources ---------------------------------------------------------------------


def test_no_sources_is_an_error() -> None:
    with pytest.raises(IngestError, match=exactly("no sources given")):
        load_documents([])


def test_a_single_string_is_not_a_list_of_sources(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not a single string"):
        load_documents(str(tmp_path))


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=exactly(f"source {tmp_path / 'missing.md'} does not exist")):
        load_documents([str(tmp_path / "missing.md")])


def test_duplicate_ids_across_sources_are_an_error(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "first", {"a.md": "One."})
    second = make_tree(tmp_path / "second", {"a.md": "Two."})
    message = f"duplicate document id 'a.md' from sources {first / 'a.md'} and {second / 'a.md'}"
    with pytest.raises(IngestError, match=exactly(message)):
        load_documents([str(first), str(second)])


def test_a_jsonl_record_may_not_reuse_a_file_id(tmp_path: Path) -> None:
    guide = write(tmp_path / "guide.md", "Guide.")
    records = write(tmp_path / "records.jsonl", '{"id": "guide.md", "text": "Imposter."}')
    with pytest.raises(
        IngestError, match=exactly(f"duplicate document id 'guide.md' from sources {guide} and {records}")
    ):
        load_documents([str(guide), str(records)])


def test_max_document_bytes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_document_bytes"):
        load_documents([str(tmp_path)], max_document_bytes=0)


# --- URLs --------------------------------------------------------------------------------------


@dataclass
class StaticServer:
    """A real HTTP server on 127.0.0.1 serving fixed responses and recording request headers."""

    routes: dict[str, tuple[int, dict[str, str], bytes]]
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    base_url: str = ""

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture
def server() -> Iterator[StaticServer]:
    records = '{"id": "r1", "text": "Remote one."}\n{"id": "r2", "text": "Remote two."}\n'
    static = StaticServer(
        routes={
            "/guide.html": (200, {"Content-Type": "text/html; charset=utf-8"}, HTML_PAGE.encode()),
            "/notes": (200, {"Content-Type": "text/markdown"}, b"# Notes\n\nRemote markdown.\n"),
            "/records": (200, {"Content-Type": "application/x-ndjson"}, records.encode()),
            "/more.jsonl": (200, {"Content-Type": "application/jsonl"}, b'{"id": "r3", "text": "Three."}\n'),
            "/raw/readme.md": (200, {"Content-Type": "text/plain; charset=utf-8"}, b"# Readme\n"),
            "/plain": (200, {"Content-Type": "text/plain"}, b"Just text.\n"),
            "/download.txt": (200, {"Content-Type": "application/octet-stream"}, b"Text by extension.\n"),
            "/latin1.txt": (200, {"Content-Type": "text/plain; charset=iso-8859-1"}, "café".encode("latin-1")),
            "/image": (200, {"Content-Type": "image/png"}, b"\x89PNG"),
            "/big.md": (200, {"Content-Type": "text/markdown"}, b"x" * 2000),
            "/unsized.md": (200, {"Content-Type": "text/markdown"}, b"y" * 2000),
            "/binary.txt": (200, {"Content-Type": "text/plain"}, b"\x00\x01\x02"),
            "/old": (301, {"Location": "/notes"}, b""),
        }
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            static.seen_headers.append(dict(self.headers.items()))
            status, headers, body = static.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"nope"))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if self.path != "/unsized.md":  # HTTP/1.0: without a length the body ends when the connection closes
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest output clean

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    static.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield static
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_urls_take_their_format_from_the_content_type(server: StaticServer) -> None:
    urls = [server.url(path) for path in ("/guide.html", "/notes", "/records", "/more.jsonl", "/plain")]

    result = load_documents(urls)

    assert [(d.id, d.source, d.format, d.title) for d in result.documents] == sorted(
        [
            (server.url("/guide.html"), server.url("/guide.html"), "html", "Install ragops"),
            (server.url("/notes"), server.url("/notes"), "markdown", "Notes"),
            ("r1", server.url("/records"), "jsonl", None),
            ("r2", server.url("/records"), "jsonl", None),
            ("r3", server.url("/more.jsonl"), "jsonl", None),
            (server.url("/plain"), server.url("/plain"), "text", None),
        ]
    )
    assert next(d for d in result.documents if d.format == "html").text == HTML_TEXT


def test_url_extension_wins_over_a_generic_content_type(server: StaticServer) -> None:
    documents = load_documents([server.url("/raw/readme.md"), server.url("/download.txt")]).documents
    assert [(d.format, d.title, d.text) for d in documents] == [
        ("text", None, "Text by extension.\n"),
        ("markdown", "Readme", "# Readme\n"),
    ]


def test_url_charset_is_honoured(server: StaticServer) -> None:
    (document,) = load_documents([server.url("/latin1.txt")]).documents
    assert document.text == "café"


def test_url_redirects_are_followed(server: StaticServer) -> None:
    (document,) = load_documents([server.url("/old")]).documents
    assert document.id == server.url("/old")
    assert document.text == "# Notes\n\nRemote markdown.\n"


def test_url_http_error_names_status_and_url(server: StaticServer) -> None:
    with pytest.raises(IngestError, match=exactly(f"fetching {server.url('/missing.md')} failed: HTTP 404 Not Found")):
        load_documents([server.url("/missing.md")])


def test_url_unsupported_content_type_is_an_error(server: StaticServer) -> None:
    with pytest.raises(
        IngestError, match=exactly(f"source {server.url('/image')}: unsupported content type image/png")
    ):
        load_documents([server.url("/image")])


def test_url_too_large_or_binary_is_skipped_unless_strict(server: StaticServer) -> None:
    sources = [server.url(path) for path in ("/notes", "/big.md", "/unsized.md", "/binary.txt")]
    result = load_documents(sources, max_document_bytes=1000)
    assert [d.id for d in result.documents] == [server.url("/notes")]
    assert result.skipped == [
        SkippedSource(server.url("/big.md"), "larger than 1000 bytes"),
        SkippedSource(server.url("/unsized.md"), "larger than 1000 bytes"),
        SkippedSource(server.url("/binary.txt"), "binary file"),
    ]
    with pytest.raises(IngestError, match=exactly(f"{server.url('/big.md')}: larger than 1000 bytes")):
        load_documents(sources, max_document_bytes=1000, strict=True)


def test_url_connection_error_names_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/gone.md"  # nothing listens on a port just released
    with pytest.raises(IngestError, match=re.escape(f"fetching {url} failed: ConnectError")):
        load_documents([url])


def test_a_given_http_client_is_used_and_left_open(server: StaticServer) -> None:
    with httpx.Client(headers={"X-Probe": "ragops-test"}, timeout=5.0) as client:
        load_documents([server.url("/notes")], http_client=client)
        assert server.seen_headers[-1]["X-Probe"] == "ragops-test"
        assert not client.is_closed


def test_only_http_urls_are_fetched() -> None:
    with pytest.raises(IngestError, match=re.escape("source ftp://example.com/a.md: unsupported URL")):
        load_documents(["ftp://example.com/a.md"])


def test_local_files_and_urls_mix(server: StaticServer, tmp_path: Path) -> None:
    docs = make_tree(tmp_path / "docs", {"local.md": "Local."})
    assert ids([str(docs), server.url("/notes")]) == [server.url("/notes"), "local.md"]  # sorted by id


def test_jsonl_size_limit_applies_per_record_not_per_file(tmp_path: Path) -> None:
    # An export of many records is routinely larger than any one document may be.
    records = [{"id": f"r{n}", "text": "x" * 400} for n in range(10)]
    records.append({"id": "huge", "text": "y" * 5000})
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert path.stat().st_size > 4096
    result = load_documents([str(path)], max_document_bytes=1024)
    assert [d.id for d in result.documents] == [f"r{n}" for n in range(10)]
    assert result.skipped == [SkippedSource(source=f"{path}:11", reason="larger than 1024 bytes")]
    with pytest.raises(IngestError, match="larger than 1024 bytes"):
        load_documents([str(path)], max_document_bytes=1024, strict=True)
