"""A small Markdown writer for the generated documents: citations that can only name indexed registry
records, facts people declared in the recipe, and gaps, which are collected as they are met so that
every document ends with the list of what is still missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from .docs_records import RecordIndex, RecordRef

DECLARED = "(declared in tunewright.yaml)"
LINEAGE_MARKER = "<!-- tunewright:lineage-drawing -->"  # where the HTML puts the lineage drawing


# What each unset govern.documentation field leaves unsaid: one wording, whichever document asks.
FIELD_GAPS = {
    "provider": "the provider is not named", "contact": "no contact is given",
    "intended_purpose": "the intended purpose is not stated", "intended_users": "the intended users are not stated",
    "out_of_scope": "out-of-scope uses are not stated", "known_limitations": "known limitations are not stated",
    "risks": "foreseeable risks and their mitigations are not stated",
    "human_oversight": "human oversight of the deployed model is not described",
    "license": "the license is not stated", "language": "the language(s) are not stated",
}


@dataclass(frozen=True)
class Gap:
    text: str
    fix: str | None = None


def esc(value: Any) -> str:
    """Text from records or the recipe, made inert: it must not become HTML, a link or emphasis."""
    # "<" would open a tag and "&name;" would be read as an entity; a lone ">" or "&" is plain text.
    text = re.sub(r"&(?=#?\w+;)", "&amp;", str(value).replace("\\", "\\\\")).replace("<", "&lt;")
    for ch in "`*[]|":
        text = text.replace(ch, "\\" + ch)
    return " ".join(text.split())


def code(value: Any) -> str:
    text = " ".join(str(value).split()).replace("|", "\\|")  # a pipe would end a table cell
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def pts(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f} pts"


def num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


class Doc:
    def __init__(self, title: str, index: RecordIndex) -> None:
        self.title = title
        self.index = index
        self.parts: list[str] = []
        self.gaps: list[Gap] = []
        self.cited: dict[str, RecordRef] = {}
        self.n_citations = 0
        self.n_declared = 0

    # -- blocks -------------------------------------------------------------------------------------

    def h2(self, text: str) -> None:
        self.parts.append(f"## {text}")

    def h3(self, text: str) -> None:
        self.parts.append(f"### {text}")

    def p(self, text: str) -> None:
        if text.strip():
            self.parts.append(text.strip())

    def bullets(self, items: Iterable[str]) -> None:
        items = [i for i in items if i]
        if items:
            self.parts.append("\n".join(f"- {i}" for i in items))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        if not rows:
            return
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(str(c).replace("\n", " ") for c in row) + " |" for row in rows]
        self.parts.append("\n".join(lines))

    def codeblock(self, text: str, lang: str = "") -> None:
        self.parts.append(f"```{lang}\n{text.rstrip()}\n```")

    def raw(self, text: str) -> None:
        self.parts.append(text)

    # -- inline -------------------------------------------------------------------------------------

    def cite(self, kind: str, record_id: Any) -> str:
        ref = self.index.get(kind, record_id)
        self.cited.setdefault(ref.key, ref)
        self.n_citations += 1
        return f"[[{ref.label}]](#{ref.anchor})"

    def cites(self, *refs: tuple[str, Any] | None) -> str:
        return " ".join(self.cite(kind, rid) for kind, rid in (r for r in refs if r is not None))

    def declared(self, value: Any) -> str:
        self.n_declared += 1
        return f"{esc(value)} {DECLARED}"

    def gap(self, text: str, fix: str | None = None) -> str:
        if all(g.text != text for g in self.gaps):
            self.gaps.append(Gap(text, fix))
        return f"**Gap:** {esc(text)}"

    def declared_or_gap(self, value: Any, field: str) -> str:
        """A fact people declared in the recipe's govern.documentation section, or its gap."""
        if value in (None, "", []):
            return self.gap(FIELD_GAPS[field], f"set govern.documentation.{field} in tunewright.yaml")
        if isinstance(value, list):
            return "; ".join(esc(v) for v in value) + f" {DECLARED}"
        return self.declared(value)

    # -- output -------------------------------------------------------------------------------------

    def render(self, intro: str = "") -> str:
        out = [f"# {self.title}"]
        if intro:
            out.append(intro)
        out += self.parts
        out.append("## Records cited")
        if self.cited:
            rows = []
            for ref in sorted(self.cited.values(), key=lambda r: (r.kind, int(r.id) if r.id.isdigit() else 0)):
                event = f"event {ref.event_id} {code(ref.event_hash)}" if ref.event_id is not None else "not found"
                digest = f"{esc(ref.hash_label)}: {code(ref.hash)}" if ref.hash else "n/a"
                rows.append([f'<a id="{ref.anchor}"></a>{ref.label}', ref.kind, ref.id, ref.created_at or "n/a",
                             digest, event])
            header = ["record", "kind", "id", "created (UTC)", "hash", "audit event"]
            out.append("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                                 + ["| " + " | ".join(r) + " |" for r in rows]))
        else:
            out.append("No registry record is cited.")
        out.append("## Gaps to fill")
        if self.gaps:
            out.append("\n".join(f"{i}. {esc(g.text)}" + (f": {esc(g.fix)}" if g.fix else "")
                                 for i, g in enumerate(self.gaps, start=1)))
        else:
            out.append("None: every statement above comes from a registry record or the recipe.")
        return "\n\n".join(out) + "\n"

    def summary(self) -> dict[str, Any]:
        return {"n_gaps": len(self.gaps), "gaps": [g.text for g in self.gaps], "n_citations": self.n_citations,
                "records_cited": sorted(self.cited), "n_declared": self.n_declared}
