"""Markdown -> self-contained HTML (house style, lineage drawing inline) -> PDF through WeasyPrint.

The Markdown is the document of record (it is what the registry pins); HTML and PDF are renderings
of it, so the three can never say different things.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape
from markdown_it import MarkdownIt

from ..errors import TunewrightError
from .docs_md import LINEAGE_MARKER

_H2 = re.compile(r"<h2>(.*?)</h2>", re.S)
_TAG = re.compile(r"<[^>]+>")


def _slug(text: str) -> str:
    plain = html.unescape(_TAG.sub("", text)).lower()
    return re.sub(r"[^a-z0-9]+", "-", plain).strip("-") or "section"


def markdown_to_fragment(text: str) -> str:
    # Raw HTML is allowed for the appendix anchors; text from records is escaped before it gets here.
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def _with_heading_ids(fragment: str) -> tuple[str, list[tuple[str, str]]]:
    toc: list[tuple[str, str]] = []
    seen: set[str] = set()

    def anchor(match: re.Match) -> str:
        inner = match.group(1)
        slug = base = _slug(inner)
        n = 2
        while slug in seen:
            slug, n = f"{base}-{n}", n + 1
        seen.add(slug)
        toc.append((slug, html.unescape(_TAG.sub("", inner))))
        return f'<h2 id="{slug}">{inner}</h2>'
    return _H2.sub(anchor, fragment), toc


def render_html(markdown_body: str, *, title: str, kind_label: str, generated_at: str, registry: str,
                lineage_svg: str | None = None, front_matter: str | None = None) -> str:
    fragment = markdown_to_fragment(markdown_body)
    fragment = fragment.replace("<strong>Gap:</strong>", '<strong class="gap">Gap:</strong>')
    if lineage_svg:
        figure = (f'<figure class="lineage-figure">{lineage_svg}<figcaption>Lineage: each box is a registry '
                  "record (click it for its entry under Records cited); arrows run from input to output."
                  "</figcaption></figure>")
        fragment = fragment.replace(LINEAGE_MARKER, figure)
    fragment, toc = _with_heading_ids(fragment)
    # The title and the introduction come before the contents and the Hub metadata.
    cut = fragment.find("<h2")
    head, body = (fragment[:cut], fragment[cut:]) if cut >= 0 else (fragment, "")
    env = Environment(loader=ChoiceLoader([PackageLoader("tunewright.govern", "templates"),
                                           PackageLoader("tunewright.evaluate", "templates")]),
                      autoescape=select_autoescape())
    return env.get_template("docs.html").render(
        title=title, head=head, body=body, toc=toc, kind_label=kind_label, generated_at=generated_at,
        registry=registry, front_matter=front_matter)


def render_pdf(html_text: str, base_url: str | Path) -> bytes:
    """A real layout engine, so the PDF paginates, keeps the lineage drawing and links anchors."""
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:  # OSError: the Pango/cairo system libraries are missing
        raise TunewrightError(f"PDF output needs WeasyPrint and its system libraries ({exc}); "
                              "use --no-pdf or install them", field="format") from None
    return HTML(string=html_text, base_url=str(base_url)).write_pdf()
