"""Document cleaning is pure: HTML and reStructuredText in, readable text and counts out."""

from __future__ import annotations

from pathlib import Path

from ragops_runtime.kb.cleaning import drop_repeated_blocks, html_to_text, rst_to_text
from ragops_runtime.kb.ingest import load_documents

# A documentation page shaped like Sphinx's and DocBook's output: navigation bars above and below
# the content, a sidebar, a permalink in every heading, scripts, styles and a site footer.
PAGE_WITH_NAV = """<!DOCTYPE html>
<html><head><title>json — JSON encoder — Example 3.11 documentation</title>
<style>body { color: red }</style><script>var tracking = "nav script";</script></head>
<body>
<div class="mobile-nav"><a href="/">Logo</a><form role="search"><input name="q"> Go</form></div>
<div class="related" role="navigation"><ul><li><a href="index.html">index</a></li>
<li><a href="next.html">next</a> |</li><li><a href="prev.html">previous</a> |</li></ul></div>
<div class="navheader"><table><tr><td>Prev</td><td>Up</td><td>Home</td><td>Next</td></tr></table></div>
<nav id="toc">Table of Contents: Basic Usage, Encoders</nav>
<div class="document"><div class="body" role="main">
<section id="json"><h1>json — JSON encoder<a class="headerlink" href="#json">¶</a></h1>
<p>Source code: Lib/json/__init__.py</p>
<p>JSON is a lightweight data interchange format.</p>
<section id="basic-usage"><h2>Basic Usage<a class="headerlink" href="#basic-usage">¶</a></h2>
<p>Use <code>dumps</code> with <code>indent=4</code> to pretty print.</p>
<pre>&gt;&gt;&gt; json.dumps({"a": 1}, indent=4)
# not a heading</pre>
</section></section></div></div>
<div class="sphinxsidebar" role="complementary"><h3>This Page</h3><p>Report a Bug</p></div>
<div class="navfooter">Prev Up Home Next</div>
<footer><p>© Copyright 2001-2023, Example Foundation.</p></footer>
</body></html>
"""


def test_navigation_headers_footers_scripts_and_styles_are_dropped() -> None:
    clean = html_to_text(PAGE_WITH_NAV)

    assert clean.text == (
        "# json — JSON encoder\n\n"
        "Source code: Lib/json/__init__.py\n\n"
        "JSON is a lightweight data interchange format.\n\n"
        "## Basic Usage\n\n"
        "Use dumps with indent=4 to pretty print.\n\n"
        '```\n>>> json.dumps({"a": 1}, indent=4)\n# not a heading\n```'
    )
    for boilerplate in ("Prev", "Home", "previous", "Report a Bug", "Copyright", "tracking", "color", "¶", "Logo"):
        assert boilerplate not in clean.text
    # The page's own <h1>, not the site-flavoured <title>, and without its permalink.
    assert clean.title == "json — JSON encoder"
    assert clean.dropped_chars >= len("Prev Up Home Next") * 2


def test_header_and_footer_inside_an_article_are_content() -> None:
    clean = html_to_text(
        "<body><header>Site banner</header><article><header><h1>Release notes</h1></header>"
        "<p>Body.</p><footer>Written by the release team.</footer></article></body>"
    )
    assert clean.text == "# Release notes\n\nBody.\n\nWritten by the release team."


def footer_page(number: int) -> str:
    return (
        f"# Page {number}\n\nContent unique to page {number}, about topic {number}.\n\n"
        "## See also\n\n"
        "Questions? Write to docs@example.org or call us.\n\n"
        "```\nimport example\n```\n\n"
        "Copyright 2024 Example Corp. All rights reserved."
    )


def test_blocks_repeated_across_most_pages_are_dropped_but_headings_and_code_stay() -> None:
    pages = [footer_page(number) for number in range(6)]

    cleaned, blocks, chars = drop_repeated_blocks(pages)

    assert cleaned[2] == (
        "# Page 2\n\nContent unique to page 2, about topic 2.\n\n## See also\n\n```\nimport example\n```"
    )
    assert blocks == 12  # two repeated paragraphs on each of six pages
    assert chars == 6 * (
        len("Questions? Write to docs@example.org or call us.")
        + len("Copyright 2024 Example Corp. All rights reserved.")
    )


def test_few_pages_are_left_alone() -> None:
    pages = [footer_page(number) for number in range(4)]  # below the minimum of 5 documents
    assert drop_repeated_blocks(pages) == (pages, 0, 0)


def test_a_block_on_a_minority_of_pages_is_content() -> None:
    pages = [footer_page(number) for number in range(5)] + [f"# Other {n}\n\nText {n}." for n in range(15)]
    # 5 of 20 pages is below the 30 % share.
    assert drop_repeated_blocks(pages)[1] == 0


def test_ingestion_drops_a_repeated_footer_no_rule_knows_and_reports_it(tmp_path: Path) -> None:
    docs = tmp_path / "site"
    docs.mkdir()
    for number in range(6):
        (docs / f"page-{number}.html").write_text(
            f"<html><body><main><h1>Page {number}</h1><p>Unique text {number}.</p></main>"
            f'<div class="legal"><p>All content licensed CC-BY 4.0 by Example Corp.</p></div>'
            f'<div class="nav-links"><a>Prev</a> <a>Next</a></div></body></html>'
        )

    result = load_documents([str(docs)])

    assert result.documents[0].text == "# Page 0\n\nUnique text 0."
    report = result.boilerplate
    assert report.repeated_blocks == 6
    assert report.repeated_chars == 6 * len("All content licensed CC-BY 4.0 by Example Corp.")
    assert report.markup_chars == 6 * len("Prev Next")
    assert report.kept_chars == sum(len(d.text) for d in result.documents)
    assert 0 < report.dropped_share < 1


def test_restructuredtext_titles_become_headings_by_adornment_order() -> None:
    text, title = rst_to_text(
        "=====\nGuide\n=====\n\n.. index:: guide\n\nIntro.\n\nInstall\n-------\n\nRun it.\n\n"
        ".. note::\n\n   Needs Python 3.11.\n\n.. _target:\n\nDetails\n~~~~~~~\n\nMore.\n\nUsage\n-----\n\nUse it.\n"
    )
    assert title == "Guide"
    assert text == (
        "# Guide\n\nIntro.\n\n## Install\n\nRun it.\n\n   Needs Python 3.11.\n\n### Details\n\nMore.\n\n"
        "## Usage\n\nUse it."
    )
