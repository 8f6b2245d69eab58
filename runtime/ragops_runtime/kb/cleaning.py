"""Document cleaning: readable text out of HTML and reStructuredText, and boilerplate out of everything.

What a reader of a documentation page skips must not be indexed either: navigation bars, headers
and footers, sidebars, scripts, styles, "Prev / Up / Home / Next" links, copyright lines. Left in,
they make a third of the chunks look alike, crowd real passages out of the top ranks and cost
embedding time. Two complementary mechanisms remove them:

1. Markup (HTML only, parsed with selectolax's Lexbor engine, never with regexes): elements that
   are boilerplate by definition (script, style, nav, aside, form, template, page-level header and
   footer) or by declared role or class (role="navigation", class="related", "sphinxsidebar",
   "navheader", "breadcrumb", ...).
2. Repetition, for every format: a block (a paragraph, list item or line of text, never a heading
   or code) found in at least `REPEATED_SHARE` of the documents of one source, and in at least
   `REPEATED_MIN_DOCUMENTS` of them, is boilerplate whatever its markup: footers of a site whose
   classes no rule knows, licence notes pasted into every page.

Headings come out as Markdown `#` lines, code as fenced blocks, so the chunker cuts along the
page's structure. Pure: text in, text and counts out; no files, no network, no clock.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from selectolax.lexbor import LexborHTMLParser, LexborNode

REPEATED_SHARE = 0.3
REPEATED_MIN_DOCUMENTS = 5

_DROPPED_TAGS = frozenset(
    {"script", "style", "nav", "aside", "noscript", "template", "form", "button", "svg", "iframe", "select"}
)
_PAGE_LEVEL_ONLY = frozenset({"header", "footer"})  # inside <article> or <main> they belong to the content
_BOILERPLATE_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "complementary", "menu", "menubar"})
_BOILERPLATE_CLASSES = frozenset(
    {
        "breadcrumb",
        "breadcrumbs",
        "copybutton",
        "edit-this-page",
        "footer",
        "headerlink",
        "mobile-nav",
        "navbar",
        "navfooter",
        "navheader",
        "related",
        "sidebar",
        "skip-link",
        "sphinxsidebar",
        "toc",
    }
)
_BOILERPLATE_CLASS_PATTERN = re.compile(
    r"^(?:nav[-_]|navbar|sidenav|sidebar)|[-_](?:nav|navigation|sidebar|breadcrumbs?)$"
)
_HEADING_LEVELS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "blockquote",
        "body",
        "caption",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "header",
        "hr",
        "html",
        "main",
        "ol",
        "p",
        "section",
        "summary",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
    }
)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class CleanText:
    """A page's readable text (blocks separated by blank lines), its title and what was dropped."""

    text: str
    title: str | None
    dropped_chars: int


@dataclass(frozen=True)
class BoilerplateReport:
    """What cleaning removed from one build's documents, in characters of text."""

    markup_chars: int = 0
    repeated_blocks: int = 0
    repeated_chars: int = 0
    kept_chars: int = 0

    @property
    def dropped_share(self) -> float:
        dropped = self.markup_chars + self.repeated_chars
        total = dropped + self.kept_chars
        return dropped / total if total else 0.0

    def to_json(self) -> dict[str, float]:
        return {
            "markupChars": self.markup_chars,
            "repeatedBlocks": self.repeated_blocks,
            "repeatedChars": self.repeated_chars,
            "keptChars": self.kept_chars,
            "droppedShare": round(self.dropped_share, 4),
        }


def html_to_text(html: str) -> CleanText:
    """Readable text of an HTML page, headings as Markdown `#` lines, and its title.

    The title is the first <h1> (the page's own name) or else <title>; a <title> usually carries
    the site's name too ("json — ... — Python 3.11 documentation").
    """
    tree = LexborHTMLParser(html)
    heading = tree.css_first("h1")
    title_node = tree.css_first("title")
    title = _visible_text(heading) if heading is not None else ""
    if not title and title_node is not None:
        title = _collapse(title_node.text(separator=" "))
    root = tree.body if tree.body is not None else tree.root
    if root is None:
        return CleanText(text="", title=title or None, dropped_chars=0)
    writer = _Writer()
    writer.walk(root, inside_content=False)
    writer.flush()
    return CleanText(text="\n\n".join(writer.blocks), title=title or None, dropped_chars=writer.dropped_chars)


def drop_repeated_blocks(texts: Sequence[str]) -> tuple[list[str], int, int]:
    """Removes the blocks that recur across `texts` (the documents of one source); see the module docstring.

    Returns the cleaned texts, the number of blocks removed and their characters.
    """
    threshold = max(REPEATED_MIN_DOCUMENTS, math.ceil(REPEATED_SHARE * len(texts)))
    if len(texts) < threshold:
        return list(texts), 0, 0
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update({block for block in _candidate_blocks(text)})
    repeated = {block for block, documents in counts.items() if documents >= threshold}
    if not repeated:
        return list(texts), 0, 0
    cleaned: list[str] = []
    blocks_dropped = chars_dropped = 0
    for text in texts:
        kept: list[str] = []
        for block in _blocks(text):
            if _normalized(block) in repeated and not _is_structure(block):
                blocks_dropped += 1
                chars_dropped += len(block)
            else:
                kept.append(block)
        cleaned.append("\n\n".join(kept))
    return cleaned, blocks_dropped, chars_dropped


def _blocks(text: str) -> list[str]:
    """Blank-line separated blocks; a fenced code block stays whole whatever blank lines it holds."""
    blocks: list[str] = []
    current: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None and stripped.startswith(fence):
            fence = None
        if not stripped and fence is None:
            if current:
                blocks.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def _candidate_blocks(text: str) -> list[str]:
    return [_normalized(block) for block in _blocks(text) if not _is_structure(block)]


def _is_structure(block: str) -> bool:
    """Headings and code are never boilerplate: the same heading or snippet on many pages is content."""
    first = block.lstrip()
    return first.startswith(("#", "```", "~~~"))


def _normalized(block: str) -> str:
    return _collapse(block).casefold()


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _is_boilerplate_element(node: LexborNode, inside_content: bool) -> bool:
    tag = node.tag or ""
    if tag in _DROPPED_TAGS:
        return True
    if tag in _PAGE_LEVEL_ONLY and not inside_content:
        return True
    attributes = node.attributes
    if (attributes.get("role") or "").strip().lower() in _BOILERPLATE_ROLES:
        return True
    if (attributes.get("aria-hidden") or "").strip().lower() == "true":
        return True
    for token in (attributes.get("class") or "").lower().split():
        if token in _BOILERPLATE_CLASSES or _BOILERPLATE_CLASS_PATTERN.search(token):
            return True
    return False


class _Writer:
    """Walks the parsed page, gathering inline text and closing a block at every block element."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.dropped_chars = 0
        self._inline: list[str] = []
        self._prefix = ""

    def flush(self) -> None:
        lines = (_collapse(line) for line in "".join(self._inline).split("\n"))
        text = "\n".join(line for line in lines if line)
        if text:
            self.blocks.append(self._prefix + text)
            self._prefix = ""
        self._inline.clear()

    def walk(self, node: LexborNode, *, inside_content: bool) -> None:
        child = node.first_child
        while child is not None:
            if child.is_text_node:
                # Source line breaks are layout, not text: only <br> breaks a line.
                self._inline.append(_SPACE.sub(" ", child.text_content or ""))
            elif child.is_element_node:
                self._element(child, inside_content)
            child = child.next

    def _element(self, node: LexborNode, inside_content: bool) -> None:
        tag = node.tag or ""
        if tag == "head":
            return
        if _is_boilerplate_element(node, inside_content):
            self.dropped_chars += len(_collapse(node.text(separator=" ")))
            return
        inside = inside_content or tag in ("main", "article")
        if tag in _HEADING_LEVELS:
            self.flush()
            heading = _visible_text(node)
            if heading:
                self.blocks.append("#" * _HEADING_LEVELS[tag] + " " + heading)
        elif tag == "pre":
            self.flush()
            code = node.text(deep=True).strip("\n")
            if code.strip():
                # Fenced, so the chunker does not read a `# comment` in the code as a heading.
                self.blocks.append(f"```\n{code}\n```")
        elif tag == "br":
            self._inline.append("\n")
        elif tag == "li":
            self.flush()
            self._prefix = _list_marker(node)
            self.walk(node, inside_content=inside)
            self.flush()
        elif tag in ("td", "th"):
            previous = node.prev
            while previous is not None and not previous.is_element_node:
                previous = previous.prev
            if previous is not None and previous.tag in ("td", "th"):
                self._inline.append(" | ")
            self.walk(node, inside_content=inside)
        elif tag in _BLOCK_TAGS:
            self.flush()
            self.walk(node, inside_content=inside)
            self.flush()
        else:
            self.walk(node, inside_content=inside)


def _visible_text(node: LexborNode) -> str:
    """A heading's text without its boilerplate parts, such as the permalink `<a class="headerlink">¶</a>`."""
    parts: list[str] = []
    for descendant in node.traverse(include_text=True):
        if descendant.is_text_node and not _has_boilerplate_ancestor(descendant, node):
            parts.append(descendant.text_content or "")
    return _collapse("".join(parts))


def _has_boilerplate_ancestor(node: LexborNode, stop: LexborNode) -> bool:
    """A heading's permalink (`<a class="headerlink">¶</a>`) is not part of its text."""
    parent = node.parent
    while parent is not None and parent.mem_id != stop.mem_id:
        if _is_boilerplate_element(parent, inside_content=True):
            return True
        parent = parent.parent
    return False


def _list_marker(item: LexborNode) -> str:
    parent = item.parent
    if parent is not None and parent.tag == "ol":
        number = 1
        sibling = item.prev
        while sibling is not None:
            if sibling.tag == "li":
                number += 1
            sibling = sibling.prev
        return f"{number}. "
    return "- "


# ---- reStructuredText ----------------------------------------------------------------------------

_RST_ADORNMENT = re.compile(r"""^([!-/:-@\[-`{-~])\1{2,}\s*$""")
_RST_DIRECTIVE = re.compile(r"^\.\.\s+([\w:-]+)::\s*(.*)$")
_RST_DROPPED_DIRECTIVES = frozenset(
    {"index", "toctree", "meta", "only", "highlight", "sectionauthor", "moduleauthor", "include", "raw", "image"}
)


def rst_to_text(text: str) -> tuple[str, str | None]:
    """reStructuredText with its section titles as Markdown `#` lines, and the document title.

    Levels follow the order in which adornment styles first appear (overline + underline counts as
    a style of its own), as docutils assigns them. Comments, targets, substitution definitions and
    the bodies of index/toctree/meta directives are dropped; other directives keep their content.
    """
    lines = text.split("\n")
    styles: list[tuple[str, bool]] = []
    out: list[str] = []
    title: str | None = None
    skipping_indented = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if skipping_indented:
            if not line.strip() or line.startswith((" ", "\t")):
                index += 1
                continue
            skipping_indented = False
        overline = _RST_ADORNMENT.match(line)
        if (
            overline
            and index + 2 < len(lines)
            and lines[index + 1].strip()
            and _RST_ADORNMENT.match(lines[index + 2])
            and lines[index + 2].strip()[0] == overline.group(1)
        ):
            heading = lines[index + 1].strip()
            style = (overline.group(1), True)
            index += 3
        elif (
            line.strip()
            and not line.startswith((" ", "\t"))
            and index + 1 < len(lines)
            and _RST_ADORNMENT.match(lines[index + 1])
            and len(lines[index + 1].rstrip()) >= len(line.rstrip())
        ):
            heading = line.strip()
            style = (lines[index + 1].strip()[0], False)
            index += 2
        else:
            stripped = line.strip()
            if stripped.startswith("..") and not line.startswith((" ", "\t")):
                # A directive keeps its argument and body (notes, warnings, code); index entries, tables
                # of contents, targets, substitutions and comments are markup, with their indented bodies.
                directive = _RST_DIRECTIVE.match(stripped)
                if directive and directive.group(1) not in _RST_DROPPED_DIRECTIVES:
                    if directive.group(2):
                        out.append(directive.group(2))
                else:
                    skipping_indented = True
                index += 1
                continue
            out.append(line)
            index += 1
            continue
        if style not in styles:
            styles.append(style)
        level = min(styles.index(style) + 1, 6)
        if title is None:
            title = heading
        out.extend(["", "#" * level + " " + heading, ""])
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n"), title
