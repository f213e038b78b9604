"""Split source documents (Markdown, text, PDF) into chunks a teacher can ground one question in.

Markdown is cut at headings first, so a chunk never mixes two sections, and each chunk keeps
its heading path as context; within a section, paragraphs are packed up to ``max_chars``, and a
paragraph that alone is too long is cut at sentence ends. Every chunk records where it came from
(file, page or line range) so a generated row can cite its evidence.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunewrightError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    source: str
    index: int
    text: str
    heading: str | None  # "Policies > Returns": the section path the text sits under
    start_line: int  # 1-based line in the text file, or the page number for a PDF
    end_line: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def with_context(self) -> str:
        return f"{self.heading}\n\n{self.text}" if self.heading else self.text


def _read_pdf(path: Path) -> list[tuple[int, str]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        return [(number, page.extract_text() or "") for number, page in enumerate(PdfReader(path).pages, start=1)]
    except (PdfReadError, OSError, ValueError) as exc:
        raise TunewrightError(f"cannot read PDF: {exc}", file=path) from None


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    if len(paragraph) <= max_chars:
        return [paragraph]
    pieces, current = [], ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > max_chars:  # one endless sentence: cut it hard rather than exceed the limit
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:max_chars])
            sentence = sentence[max_chars:]
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def _markdown_units(path: Path) -> list[tuple[str | None, list[tuple[int, int, str]]]]:
    """(heading path, [(first line, last line, text)]) per run of blocks under one heading path."""
    from ..data.markdown import markdown_blocks, read_lines

    units: list[tuple[str | None, list[tuple[int, int, str]]]] = []
    for block in markdown_blocks(read_lines(path)):
        heading = " > ".join(text for _, text in block.headings) or None
        if not units or units[-1][0] != heading:
            units.append((heading, []))
        units[-1][1].append((block.start, block.end, block.text))
    return units


def _pdf_units(path: Path) -> list[tuple[str | None, list[tuple[int, int, str]]]]:
    """One unit per page; its paragraphs (blank-line separated), cited by page number."""
    units = []
    for page, text in _read_pdf(path):
        paragraphs = [" ".join(line.strip() for line in part.splitlines() if line.strip())
                      for part in re.split(r"\n\s*\n", text)]
        units.append((None, [(page, page, p) for p in paragraphs if p]))
    return units


def chunk_document(path: str | Path, *, max_chars: int = 1200) -> list[Chunk]:
    path = Path(path)
    if not path.is_file():
        raise TunewrightError("document not found", file=path)
    if max_chars < 50:
        raise TunewrightError("max_chars must be at least 50", field="max_chars")
    if path.suffix.lower() == ".pdf":
        units = _pdf_units(path)
    elif path.suffix.lower() in {".md", ".markdown", ".txt", ".text"}:
        units = _markdown_units(path)
    else:
        raise TunewrightError(f"unsupported document type '{path.suffix}' (use .md, .txt or .pdf)", file=path)
    chunks: list[Chunk] = []
    for heading, paragraphs in units:
        buffer: list[tuple[int, int, str]] = []

        def flush() -> None:
            if buffer:
                text = "\n\n".join(t for _, _, t in buffer)
                chunks.append(Chunk(path.name, len(chunks), text, heading, buffer[0][0], buffer[-1][1]))
                buffer.clear()

        for start, end, paragraph in paragraphs:
            for piece in _split_long(paragraph, max_chars):
                if buffer and sum(len(t) + 2 for _, _, t in buffer) + len(piece) > max_chars:
                    flush()
                buffer.append((start, end, piece))
        flush()
    if not chunks:
        raise TunewrightError("document has no text", file=path)
    return chunks
