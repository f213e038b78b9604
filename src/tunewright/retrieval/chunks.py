"""Sources cut into chunks: the passages retrieval finds and a prompt quotes, each able to stand alone.

- A CSV table gives one chunk per row: every non-empty cell as ``column: value``, in header order,
  joined by ``; `` (``code: PT-1042; name: Ridgeback 2 Tent; ...``). Source: the file and the row's
  first line (the header is line 1). Empty cells are left out: ``warranty: `` would say nothing.
- A Markdown or text document gives one chunk per list item or paragraph, prefixed with the path of
  headings above it (``Returns: Footwear can be returned ...``; nested headings joined by `` > ``).
  The document title (a level-1 heading on the first non-blank line, when it is the only level-1
  heading) is left out of the prefix: every chunk would repeat it. Text directly under the title,
  before any other heading, is prefixed with the title instead, so it still says what it is about.
  A fenced code block is one chunk, its lines kept. Source: the file, the item's or paragraph's
  first line, and ``section`` (the heading path, None above every heading).

A chunk's id is ``<file name>:<first line>``: stable while the lines above it do not move.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import NotFoundError, TunewrightError

TABLE_SUFFIXES = (".csv",)
DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt")
CELL_SEPARATOR = "; "
HEADING_SEPARATOR = " > "
CHUNKING = {  # what the manifest records, so an index says how its chunks were cut
    "version": 1,
    "table": "one chunk per row: 'column: value' for each non-empty cell, in header order, joined by '; '",
    "document": "one chunk per list item or paragraph, prefixed with its heading path (document title left out)",
}


@dataclass(frozen=True)
class Chunk:
    id: str
    text: str
    source: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "source": self.source}


def _check_file(path: Path) -> None:
    if not path.exists():
        raise NotFoundError("source file not found", file=path)
    if path.is_dir():
        raise TunewrightError("is a folder, expected a source file", file=path)


def chunk_table(path: str | Path) -> list[Chunk]:
    from ..data.readers import read_csv  # the project's one CSV reader: line numbers, BOM, bad bytes

    path = Path(path)
    _check_file(path)
    chunks = []
    for line, record in read_csv(path):
        text = CELL_SEPARATOR.join(f"{column}: {' '.join(value.split())}"
                                   for column, value in record.items() if value.strip())
        chunks.append(Chunk(f"{path.name}:{line}", text, {"file": path.name, "line": line}))
    if not chunks:
        raise TunewrightError("table has no rows to index", file=path)
    return chunks


def chunk_document(path: str | Path) -> list[Chunk]:
    from ..data.markdown import document_title, markdown_blocks, read_lines

    path = Path(path)
    _check_file(path)
    lines = read_lines(path)
    title = document_title(lines)
    chunks: list[Chunk] = []
    for block in markdown_blocks(lines):
        names = [text for level, text in block.headings if not (title is not None and level == 1)]
        where = HEADING_SEPARATOR.join(names) if names else (title if block.headings else None)
        text = f"{where}: {block.text}" if where else block.text
        chunks.append(Chunk(f"{path.name}:{block.start}", text, {"file": path.name, "line": block.start, "section": where}))
    if not chunks:
        raise TunewrightError("document has no text to index", file=path)
    return chunks


CHUNKERS: dict[str, Callable[[Path], list[Chunk]]] = {
    **{suffix: chunk_table for suffix in TABLE_SUFFIXES},
    **{suffix: chunk_document for suffix in DOCUMENT_SUFFIXES},
}


def chunk_file(path: str | Path) -> list[Chunk]:
    """The chunker for the file's suffix: a table (.csv) or a document (.md, .markdown, .txt)."""
    path = Path(path)
    chunker = CHUNKERS.get(path.suffix.lower())
    if chunker is None:
        raise TunewrightError(f"cannot index a '{path.suffix or '(no suffix)'}' file; sources must be tables "
                              f"({', '.join(TABLE_SUFFIXES)}) or documents ({', '.join(DOCUMENT_SUFFIXES)})", file=path)
    return chunker(path)
