"""The project's one Markdown reader: a document as blocks under their heading path.

Retrieval indexes one chunk per block; the teacher's grounding packs blocks into passages. Both read
the same structure from here, so a list item, a fenced code block or a heading means the same thing
to every stage:

- a list item is one block (continuation lines join it), and so is a paragraph;
- a fenced code block is one block that keeps its lines;
- each block carries the headings above it, outermost first, with their levels, and its first and
  last line (the opening and closing fence for code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunewrightError

_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d{1,9}[.)])\s+(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Block:
    start: int  # 1-based first line
    end: int  # 1-based last line
    headings: tuple[tuple[int, str], ...]  # (level, text), outermost first
    text: str  # whitespace collapsed to single spaces; a fenced block keeps its lines
    fenced: bool = False


def read_lines(path: Path) -> list[str]:
    """The file's lines; bad UTF-8 is refused naming the line it is on."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise TunewrightError(f"not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8", file=path,
                              line=data[: exc.start].count(b"\n") + 1) from None
    return text.splitlines()


def document_title(lines: list[str]) -> str | None:
    """A level-1 heading on the first non-blank line, when it is the document's only level-1 heading."""
    first = next((line for line in lines if line.strip()), "")
    match = _HEADING.match(first)
    if not match or len(match.group(1)) != 1:
        return None
    level_one = [line for line in lines if (m := _HEADING.match(line)) and len(m.group(1)) == 1]
    return match.group(2).strip() if len(level_one) == 1 else None


def markdown_blocks(lines: list[str]) -> list[Block]:
    headings: tuple[tuple[int, str], ...] = ()
    blocks: list[Block] = []
    body: list[str] = []
    start = end = 0
    in_fence = False

    def flush(keep_lines: bool = False) -> None:
        if not body:
            return
        text = "\n".join(body).strip("\n") if keep_lines else " ".join(" ".join(body).split())
        body.clear()
        if text.strip():
            blocks.append(Block(start, end, headings, text, keep_lines))

    for number, line in enumerate(lines, start=1):
        if in_fence:
            end = number
            if _FENCE.match(line):
                in_fence = False
                flush(keep_lines=True)
            else:
                body.append(line)
            continue
        if _FENCE.match(line):
            flush()
            start = end = number
            in_fence = True
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            level = len(heading.group(1))
            headings = tuple((lv, text) for lv, text in headings if lv < level) + ((level, heading.group(2).strip()),)
            continue
        if not line.strip():
            flush()
            continue
        item = _ITEM.match(line)
        if item:
            flush()
            body.append(item.group(2))
            start = end = number
            continue
        if not body:
            start = number
        body.append(line.strip())  # a paragraph line, or an item's continuation
        end = number
    flush(keep_lines=in_fence)
    return blocks
