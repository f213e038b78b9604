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

_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
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


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TunewrightError(f"not valid UTF-8 (byte {exc.start})", file=path, line=data[: exc.start].count(b"\n") + 1) from None


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


def _sections(lines: list[str]) -> list[tuple[str | None, list[tuple[int, str]]]]:
    """(heading path, [(line number, line)]) per Markdown section."""
    sections: list[tuple[str | None, list[tuple[int, str]]]] = [(None, [])]
    path: list[str] = []
    for number, line in enumerate(lines, start=1):
        match = _HEADING.match(line)
        if match:
            level = len(match.group(1))
            path = path[: level - 1] + [match.group(2)]
            sections.append((" > ".join(path), []))
        else:
            sections[-1][1].append((number, line))
    return sections


def _paragraphs(numbered: list[tuple[int, str]]) -> list[tuple[int, int, str]]:
    paragraphs, block = [], []
    for number, line in [*numbered, (0, "")]:
        if line.strip():
            block.append((number, line.strip()))
        elif block:
            paragraphs.append((block[0][0], block[-1][0], " ".join(text for _, text in block)))
            block = []
    return paragraphs


def chunk_document(path: str | Path, *, max_chars: int = 1200) -> list[Chunk]:
    path = Path(path)
    if not path.is_file():
        raise TunewrightError("document not found", file=path)
    if max_chars < 50:
        raise TunewrightError("max_chars must be at least 50", field="max_chars")
    if path.suffix.lower() == ".pdf":
        units = [(None, [(page, line) for line in text.splitlines()]) for page, text in _read_pdf(path)]
    elif path.suffix.lower() in {".md", ".markdown", ".txt", ".text"}:
        units = _sections(_read_text(path).splitlines())
    else:
        raise TunewrightError(f"unsupported document type '{path.suffix}' (use .md, .txt or .pdf)", file=path)
    chunks: list[Chunk] = []
    for heading, numbered in units:
        buffer: list[tuple[int, int, str]] = []

        def flush() -> None:
            if buffer:
                text = "\n\n".join(t for _, _, t in buffer)
                chunks.append(Chunk(path.name, len(chunks), text, heading, buffer[0][0], buffer[-1][1]))
                buffer.clear()

        for start, end, paragraph in _paragraphs(numbered):
            for piece in _split_long(paragraph, max_chars):
                if buffer and sum(len(t) + 2 for _, _, t in buffer) + len(piece) > max_chars:
                    flush()
                buffer.append((start, end, piece))
        flush()
    if not chunks:
        raise TunewrightError("document has no text", file=path)
    return chunks
