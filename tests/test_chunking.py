from pathlib import Path

import pytest

from tunewright.errors import TunewrightError
from tunewright.synth.chunking import chunk_document

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "peachtree" / "policies.md"


def test_markdown_chunks_follow_sections_and_cite_lines():
    chunks = chunk_document(EXAMPLE, max_chars=400)
    headings = [c.heading for c in chunks]
    assert "Peachtree Outfitters customer policies > Returns" in headings
    returns = next(c for c in chunks if c.heading.endswith("Returns"))
    assert "45 days" in returns.text and "Standard shipping" not in returns.text
    lines = EXAMPLE.read_text().splitlines()
    assert "Most items can be returned" in lines[returns.start_line - 1]
    assert all(len(c.text) <= 400 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert returns.with_context().startswith("Peachtree Outfitters customer policies > Returns\n\n")


def test_long_paragraphs_are_cut_at_sentences(tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text(" ".join(f"Sentence number {i} is here." for i in range(40)))
    chunks = chunk_document(doc, max_chars=120)
    assert len(chunks) > 5 and all(len(c.text) <= 120 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)
    assert "".join(c.text.replace(" ", "") for c in chunks) == doc.read_text().replace(" ", "")


def test_pdf_pages(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    pdf_path = tmp_path / "policy.pdf"
    with PdfPages(pdf_path) as pdf:
        for text in ("Returns are accepted within 30 days.", "Shipping takes 3 to 5 business days."):
            fig = plt.figure()
            fig.text(0.1, 0.5, text)
            pdf.savefig(fig)
            plt.close(fig)
    chunks = chunk_document(pdf_path)
    assert [(c.start_line, c.text) for c in chunks] == [(1, "Returns are accepted within 30 days."),
                                                       (2, "Shipping takes 3 to 5 business days.")]


@pytest.mark.parametrize(
    "name, content, message",
    [("empty.md", b"\n\n", "document has no text"), ("bad.md", b"ok\n\xff\n", r"bad.md:2: not valid UTF-8"),
     ("x.docx", b"PK", "unsupported document type"), ("broken.pdf", b"%PDF-1.4 garbage", "cannot read PDF")],
)
def test_bad_documents(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TunewrightError, match=message):
        chunk_document(path)
