"""The retrieval index: chunks, BM25 tokens that keep codes findable, reciprocal-rank fusion, saving and
loading, staleness, the registry, the workspace API and the CLI. Uses the real MiniLM embedder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import init_cli_workspace, run_cli
from tunewright.errors import NotFoundError, TunewrightError
from tunewright.retrieval import (Chunk, Index, build_index, changed_sources, chunk_document, chunk_file, chunk_table,
                                  tokenize)
from tunewright.retrieval.tokens import identifiers
from tunewright.retrieval.index import RRF_K

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "peachtree"
SHOES = "how many days do I have to send back shoes"
FOOTWEAR_LINE = "policies.md:7"


def peachtree_copy(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(EXAMPLE / name, folder / name)) for name in ("catalog.csv", "policies.md")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    return peachtree_copy(tmp_path_factory.mktemp("peachtree"))


@pytest.fixture(scope="module")
def index(sources) -> Index:
    return build_index(sources)


def catalog_codes() -> dict[str, str]:
    """code -> chunk id, read straight from the example CSV (row n is line n + 1)."""
    lines = (EXAMPLE / "catalog.csv").read_text().splitlines()
    return {line.split(",")[0]: f"catalog.csv:{number}" for number, line in enumerate(lines, start=1) if number > 1}


# -- chunks ------------------------------------------------------------------------------------


def test_table_chunks_render_every_cell_in_header_order(tmp_path):
    table = tmp_path / "parts.csv"
    table.write_text('code,name,price_usd,note\nAB-12,"Tent, small",99,\n\nCD-34,Stove,45,"fuel\nnot included"\n')
    assert chunk_table(table) == [
        Chunk("parts.csv:2", "code: AB-12; name: Tent, small; price_usd: 99", {"file": "parts.csv", "line": 2}),
        Chunk("parts.csv:4", "code: CD-34; name: Stove; price_usd: 45; note: fuel not included",
              {"file": "parts.csv", "line": 4}),
    ]


def test_document_chunks_carry_their_heading_path_and_first_line(tmp_path):
    doc = tmp_path / "rules.md"
    doc.write_text(
        "# Shop rules\n"                                   # 1: the title, left out of the prefixes
        "\n"
        "We sell outdoor gear.\n"                          # 3: under the title only: prefixed with it
        "\n"
        "## Returns\n"                                     # 5
        "- Boots: 60 days.\n"                              # 6
        "- Tents: 30 days,\n"                              # 7
        "  if unused.\n"                                   # 8: continues the item above
        "\n"
        "Refunds take a week.\n"                           # 10: a paragraph
        "### Sale items\n"                                 # 11
        "1. Final sale is final.\n"                        # 12
        "## Contact\n"                                     # 13
        "Call us\n"                                        # 14: a paragraph over two lines
        "any weekday.\n")
    assert [(c.id, c.text, c.source) for c in chunk_document(doc)] == [
        ("rules.md:3", "Shop rules: We sell outdoor gear.",
         {"file": "rules.md", "line": 3, "section": "Shop rules"}),
        ("rules.md:6", "Returns: Boots: 60 days.", {"file": "rules.md", "line": 6, "section": "Returns"}),
        ("rules.md:7", "Returns: Tents: 30 days, if unused.", {"file": "rules.md", "line": 7, "section": "Returns"}),
        ("rules.md:10", "Returns: Refunds take a week.", {"file": "rules.md", "line": 10, "section": "Returns"}),
        ("rules.md:12", "Returns > Sale items: Final sale is final.",
         {"file": "rules.md", "line": 12, "section": "Returns > Sale items"}),
        ("rules.md:14", "Contact: Call us any weekday.", {"file": "rules.md", "line": 14, "section": "Contact"}),
    ]


def test_text_without_headings_gives_bare_paragraphs(tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text("First paragraph\nstill first.\n\n\nSecond one.\n")
    assert [(c.id, c.text, c.source["section"]) for c in chunk_file(doc)] == [
        ("notes.txt:1", "First paragraph still first.", None), ("notes.txt:5", "Second one.", None)]


def test_two_level_one_headings_are_sections_not_a_title(tmp_path):
    doc = tmp_path / "two.md"
    doc.write_text("# Returns\nWithin 45 days.\n# Shipping\nFree over $75.\n")
    assert [c.text for c in chunk_file(doc)] == ["Returns: Within 45 days.", "Shipping: Free over $75."]


def test_peachtree_chunks(index):
    assert len(index) == 32  # 16 catalog rows, the intro paragraph and 15 policy lines
    chunk = {c.id: c for c in index.chunks}
    assert chunk["catalog.csv:2"].text == ("code: PT-1042; name: Ridgeback 2 Tent; category: tents; price_usd: 189; "
                                           "weight: 2.1 kg; warranty: 2 years")
    assert chunk[FOOTWEAR_LINE].text == "Returns: Footwear can be returned within 60 days of delivery, even if worn outdoors once."
    assert chunk[FOOTWEAR_LINE].source == {"file": "policies.md", "line": 7, "section": "Returns"}


@pytest.mark.parametrize("name, content, message", [
    ("notes.pdf", "x", "cannot index a '.pdf' file"),
    ("empty.csv", "code,name\n", "table has no rows"),
    ("blank.md", "# Title\n\n", "document has no text"),
    ("ragged.csv", "a,b\n1,2,3\n", "row has 3 columns"),
    ("bytes.md", b"fine\n\xff\n", "not valid UTF-8"),
])
def test_bad_sources_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TunewrightError, match=message) as err:
        chunk_file(path)
    assert name in str(err.value)


def test_sources_with_the_same_file_name_are_refused(tmp_path, sources):
    other = peachtree_copy(tmp_path / "other")
    with pytest.raises(TunewrightError, match="two sources are named 'catalog.csv'"):
        build_index([sources[0], other[0]])


# -- BM25 tokens and codes ---------------------------------------------------------------------


def test_tokens_keep_codes_whole_and_by_number():
    assert tokenize("PT-7716") == tokenize("pt-7716") == tokenize("pt7716") == ["pt7716", "7716"]
    assert tokenize("PT 7716") == ["pt", "7716"]
    assert "4045550142" in tokenize("call 404-555-0142") and "2.1" in tokenize("2.1 kg")
    assert tokenize("The returns") == ["return"]  # bm25s's stopword list, plural folded
    assert tokenize("accessories") == ["accessory"] and tokenize("cancelling") == ["cancelling"]
    # With stems (retrieval.stem), the same on both sides: the customer's word finds the policy's.
    stems = [tokenize(w, stem=True) for w in ("cancel", "Cancelling", "cancellation", "cancelled")]
    assert stems == [["cancel"]] * 4
    assert tokenize("return the modem", stem=True) == tokenize("returned modems", stem=True)
    assert tokenize("LB-863 costs 45", stem=True) == ["lb863", "863", "cost", "45"]  # codes and numbers never
    # Pronouns, auxiliaries and question words are in every question and no source is about them.
    assert tokenize("Can I call you on a Sunday?") == ["call", "sunday"]
    assert tokenize("Items can be returned") == ["item", "returned"]
    assert identifiers("PT-7716 or pt7716, the 40L pack, 404-555-0142 and 2.1 kg") == {"pt7716", "40l"}


def test_a_question_word_alone_does_not_put_a_chunk_in_the_bm25_ranking(tmp_path):
    doc = tmp_path / "rules.md"
    doc.write_text("## Returns\n- Most items can be returned within 45 days.\n\n## Contact\n- Support is open Monday to Saturday.\n")
    built = build_index([doc])
    assert [h.chunk.id for h in built.search_bm25("Can I call you on a Sunday?", 2)] == []
    assert [h.chunk.id for h in built.search_bm25("Can I return it?", 2)] == ["rules.md:2"]


@pytest.mark.parametrize("spelling", ["{code}", "{lower}", "{prefix} {number}", "{prefix}{number}"])
def test_every_code_is_found_at_rank_1_however_typed(index, spelling):
    for code, chunk_id in catalog_codes().items():
        prefix, number = code.split("-")
        query = spelling.format(code=code, lower=code.lower(), prefix=prefix, number=number)
        assert index.search_bm25(query, 1)[0].chunk.id == chunk_id, query
        top = index.search(query, 1)[0]
        assert (top.chunk.id, top.bm25_rank) == (chunk_id, 1), query


def test_a_question_in_other_words_finds_the_footwear_return_line(index):
    hits = index.search(SHOES, 3)
    assert FOOTWEAR_LINE in [h.chunk.id for h in hits]


def test_search_is_reciprocal_rank_fusion_of_the_two_rankings(index):
    n = len(index)
    for query in (SHOES, "PT-7716", "Which tent is the cheapest?", "whats your email"):
        bm25 = {h.chunk.id: h.bm25_rank for h in index.search_bm25(query, n)}
        dense = {h.chunk.id: h.dense_rank for h in index.search_dense(query, n)}
        assert sorted(dense.values()) == list(range(1, n + 1))  # dense ranks every chunk
        order = [c.id for c in index.chunks]
        fused = {cid: (1 / (RRF_K + bm25[cid]) if cid in bm25 else 0) + 1 / (RRF_K + dense[cid]) for cid in order}
        # A chunk holding the code the query names goes first (the only query here with a code).
        names_it = {cid: int("PT-7716" in query and cid == catalog_codes()["PT-7716"]) for cid in order}
        expected = sorted(order, key=lambda cid: (-names_it[cid], -fused[cid], order.index(cid)))
        hits = index.search(query, n)
        assert [h.chunk.id for h in hits] == expected
        for hit in hits:
            assert hit.score == pytest.approx(fused[hit.chunk.id], abs=1e-12)
            assert (hit.bm25_rank, hit.dense_rank) == (bm25.get(hit.chunk.id), dense[hit.chunk.id])


@pytest.mark.parametrize("query", ["what does PT-4415 cost", "pt-4415 price?", "is the PT4415 waterproof"])
def test_the_row_a_query_names_by_code_comes_first_even_where_the_fusion_ranks_it_lower(index, query):
    row = catalog_codes()["PT-4415"]
    hits = index.search(query, 2)
    assert hits[0].chunk.id == row and hits[0].bm25_rank == 1
    if query == "what does PT-4415 cost":
        # The fusion alone puts two shipping policies ("costs") above it: at k=2 the row was not shown.
        fused = sorted(index.search(query, len(index)), key=lambda h: -h.score)
        assert [h.chunk.id for h in fused[:3]].index(row) == 2
    # A query that names no code is ranked by the fusion alone.
    plain = index.search("how much does the backpack cost", len(index))
    assert [h.score for h in plain] == sorted((h.score for h in plain), reverse=True)


def test_k_and_empty_queries(index):
    assert len(index.search("tent", 100)) == len(index)
    with pytest.raises(TunewrightError, match="k must be at least 1"):
        index.search("tent", 0)
    with pytest.raises(TunewrightError, match="query is empty"):
        index.search("   ", 3)
    assert index.search_bm25("zzz unknown words", 5) == []  # nothing shares a term: BM25 ranks nothing
    assert len(index.search("zzz unknown words", 5)) == 5  # the dense ranking still answers


# -- saving, loading, hashing ------------------------------------------------------------------


def test_save_and_load_give_the_same_index_and_results(index, sources, tmp_path):
    folder = index.save(tmp_path / "idx")
    assert sorted(p.name for p in folder.iterdir()) == ["chunks.jsonl", "embeddings.safetensors", "manifest.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sha256"] == index.sha256 and manifest["n_chunks"] == 32
    assert manifest["embedder"] == "all-MiniLM-L6-v2" and manifest["created_at"] == index.created_at
    assert [(s["file"], s["chunks"]) for s in manifest["sources"]] == [("catalog.csv", 16), ("policies.md", 16)]
    assert manifest["settings"]["rrf"]["k"] == 60 and "chunking" in manifest["settings"]
    loaded = Index.load(folder)
    assert loaded.sha256 == index.sha256 and loaded.chunks == index.chunks and loaded.sources == index.sources
    for query in (SHOES, "PT 7716", "price match"):
        assert loaded.search(query, 5) == index.search(query, 5)


def test_a_stemmed_index_says_so_and_loads_back_stemmed(index, sources, tmp_path):
    stemmed = Index(index.chunks, index.embeddings, embedder_name=index.embedder_name, sources=index.sources,
                    embedder=index._embedder, stem=True)
    assert stemmed.sha256 != index.sha256  # a different index: its version differs
    loaded = Index.load(stemmed.save(tmp_path / "stemmed"))
    assert loaded.stem and loaded.sha256 == stemmed.sha256
    assert json.loads((tmp_path / "stemmed" / "manifest.json").read_text())["settings"]["stem"] is True
    for query in ("cancelling", "returned the boots"):
        assert list(loaded.bm25_scores(query)) == list(stemmed.bm25_scores(query))
    assert not Index.load(index.save(tmp_path / "plain")).stem


def test_hash_is_stable_across_rebuilds_and_follows_the_content(index, sources, tmp_path):
    assert build_index(sources).sha256 == index.sha256
    edited = peachtree_copy(tmp_path / "edited")
    catalog = edited[0]
    catalog.write_text(catalog.read_text().replace("PT-1042,Ridgeback 2 Tent,tents,189", "PT-1042,Ridgeback 2 Tent,tents,199"))
    assert build_index(edited).sha256 != index.sha256


def test_changed_sources_names_edited_and_missing_files(tmp_path):
    files = peachtree_copy(tmp_path / "src")
    built = build_index(files)
    assert changed_sources(built) == []
    files[1].write_text(files[1].read_text() + "\n- A new policy line.\n")
    assert changed_sources(built) == ["policies.md"]
    files[0].unlink()
    assert changed_sources(built) == ["catalog.csv", "policies.md"]
    assert changed_sources(built, lambda p: EXAMPLE / Path(p).name) == []  # resolve: where to look now


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize("name, damage, message", [
    ("embeddings.safetensors", _truncate, "damaged"),
    ("chunks.jsonl", lambda p: p.write_text(p.read_text().replace("Footwear", "Shoes")), "damaged"),
    ("chunks.jsonl", Path.unlink, "missing"),
    ("manifest.json", lambda p: p.write_text("{not json"), "manifest is damaged"),
    ("manifest.json", Path.unlink, "missing"),
])
def test_a_damaged_index_file_is_named(index, tmp_path, name, damage, message):
    folder = index.save(tmp_path / "idx")
    damage(folder / name)
    with pytest.raises(TunewrightError, match=message) as err:
        Index.load(folder)
    assert str(folder / name) in str(err.value)


def test_loading_a_missing_folder(tmp_path):
    with pytest.raises(NotFoundError, match="index folder not found"):
        Index.load(tmp_path / "nowhere")


# -- registry ----------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path):
    from tunewright.registry import Registry

    reg = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    yield reg
    reg.close()


def _add(reg, index, name="shop-index"):
    return reg.add_index(name=name, version=index.version, sha256=index.sha256, path="indexes/x", n_chunks=len(index),
                         source_files=index.sources)


def test_registry_add_get_list_and_lineage(registry, index):
    record = _add(registry, index)
    assert (record.name, record.version, record.n_chunks) == ("shop-index", index.sha256[:12], 32)
    assert record.source_files == index.sources
    assert registry.get_index("shop-index") == record == registry.get_index("shop-index", index.version)
    assert registry.list_indexes() == [record]
    event = registry.events()[-1]
    assert event.action == "index.built" and event.payload["sha256"] == index.sha256
    assert event.payload["source_sha256"] == [s["sha256"] for s in index.sources]
    edges = registry.lineage("index", record.id)
    assert {(e["parent_kind"], e["parent_id"], e["relation"]) for e in edges} == {
        ("file", s["sha256"], "source_of") for s in index.sources}

    again = _add(registry, index)  # identical content: a no-op
    assert again == record and len(registry.list_indexes()) == 1 and len(registry.events()) == 1
    assert registry.verify_events() == (True, None)


def test_registry_refuses_other_content_under_a_version_and_names_what_exists(registry, index):
    _add(registry, index)
    with pytest.raises(TunewrightError, match="already registered with different content"):
        registry.add_index(name="shop-index", version=index.version, sha256="f" * 64, path="p", n_chunks=1,
                           source_files=[])
    with pytest.raises(NotFoundError, match=f"version 'abc' not found; known versions: {index.version}"):
        registry.get_index("shop-index", "abc")
    with pytest.raises(NotFoundError, match="index 'other' not found; known: shop-index"):
        registry.get_index("other")


def test_a_registry_from_before_indexes_is_migrated(tmp_path):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from tunewright.registry import Registry
    from tunewright.registry.api import MIGRATIONS_DIR

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0004_governance")
    with create_engine(url).begin() as conn:
        conn.execute(text("INSERT INTO datasets (name, version, content_sha256, path, n_train, n_eval, n_duplicates,"
                          " source_files, spec, created_at) VALUES ('old','v1','x','p',1,0,0,'[]','{}',"
                          " '2025-01-01 00:00:00')"))
    upgraded = Registry(url)
    try:
        assert [d.name for d in upgraded.list_datasets()] == ["old"] and upgraded.list_indexes() == []
    finally:
        upgraded.close()


# -- workspace API and CLI ---------------------------------------------------------------------


def test_default_sources_are_the_recipes_tables_and_documents(tmp_path):
    from tunewright.config import BuildSpec, DocumentSource, QuestionSet, Recipe, TableSource
    from tunewright.retrieval.api import default_index_name, index_sources

    ask = QuestionSet(questions=["What is {name}?", "{name}?"], answer="{name}")
    recipe = Recipe(name="shop", build=BuildSpec(
        tables=[TableSource(path="data/catalog.csv", records=[ask])],
        documents=[DocumentSource(path="policies.md", seeds=[ask]), DocumentSource(path="policies.md", seeds=[ask])]))

    class Ws:  # the two attributes the API reads
        recipe_path = tmp_path / "tunewright.yaml"

    ws = Ws()
    ws.recipe = recipe
    assert index_sources(ws) == ["data/catalog.csv", "policies.md"] and default_index_name(ws) == "shop-index"
    ws.recipe = recipe.model_copy(update={"retrieval": recipe.retrieval.model_copy(
        update={"sources": ["faq.md"], "name": "faq"})})
    assert index_sources(ws) == ["faq.md"] and default_index_name(ws) == "faq"
    ws.recipe = Recipe(name="bare")
    with pytest.raises(TunewrightError, match="nothing to index") as err:
        index_sources(ws)
    assert "retrieval.sources" in str(err.value)


def test_recipe_retrieval_section_is_typed(tmp_path):
    from tunewright.config import load_recipe

    recipe = tmp_path / "tunewright.yaml"
    recipe.write_text("name: shop\nretrieval:\n  sources: [catalog.csv]\n  k: 5\n")
    assert load_recipe(recipe).retrieval.k == 5
    recipe.write_text("name: shop\nretrieval:\n  k: 0\n")
    with pytest.raises(TunewrightError, match="retrieval.k"):
        load_recipe(recipe)


@pytest.fixture
def shop(tmp_path, tiny_model_dir, capsys):
    root = init_cli_workspace(tmp_path / "ws", tiny_model_dir, capsys,
                              "retrieval:\n  sources: [catalog.csv, policies.md]\n  k: 2\n")
    peachtree_copy(root)
    return root


def test_cli_index_build_and_search(shop, capsys):
    from tunewright.workspace import Workspace

    code, out, err = run_cli(["-w", shop, "index", "build"], capsys)
    assert code == 0, err
    record = Workspace.open(shop).registry.get_index("shop-index")
    assert f"index shop-index@{record.version}: 32 chunks from catalog.csv (16), policies.md (16)" in out
    assert Path(record.path) == shop / "indexes" / "shop-index" / record.version
    assert (Path(record.path) / "manifest.json").is_file()

    code, out, err = run_cli(["-w", shop, "index", "search", "pt 7716"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "score", "bm25", "dense", "chunk", "text"]
    assert len(lines) == 3  # the recipe's k: 2
    assert lines[1].split()[:5] == ["1", lines[1].split()[1], "1", lines[1].split()[3], "catalog.csv:17"]
    assert "name: Basecamp 4 Tent" in lines[1]

    code, out, err = run_cli(["-w", shop, "index", "search", SHOES, "-k", "3", "--index", f"shop-index@{record.version}"],
                             capsys)
    assert code == 0, err
    assert FOOTWEAR_LINE in out and len(out.splitlines()) == 4 and err == ""

    code, out, err = run_cli(["-w", shop, "index", "build"], capsys)  # unchanged sources: the same version
    assert code == 0 and record.version in out
    assert len(Workspace.open(shop).registry.list_indexes()) == 1

    (shop / "policies.md").write_text((shop / "policies.md").read_text() + "\n- Gift cards never expire.\n")
    code, out, err = run_cli(["-w", shop, "index", "search", "gift cards"], capsys)
    assert code == 0 and "policies.md changed since index" in err

    code, out, err = run_cli(["-w", shop, "index", "search", "tent", "--index", "shop-index@0000"], capsys)
    assert code == 2 and "version '0000' not found" in err


def test_cli_index_build_refuses_a_source_it_cannot_chunk(tmp_path, tiny_model_dir, capsys):
    root = init_cli_workspace(tmp_path / "ws", tiny_model_dir, capsys, "retrieval:\n  sources: [manual.pdf]\n")
    (root / "manual.pdf").write_bytes(b"%PDF-1.4")
    code, out, err = run_cli(["-w", root, "index", "build"], capsys)
    assert code == 2
    assert "manual.pdf" in err and "cannot index a '.pdf' file" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(["-w", root, "index", "search", "tent"], capsys)
    assert code == 2 and "index 'shop-index' not found" in err


class _OtherEmbedder:
    name = "another-model"

    def encode(self, texts):
        import torch

        return torch.nn.functional.normalize(torch.ones(len(texts), 384), dim=-1)


def test_an_index_is_searched_only_with_the_embedder_it_was_built_with(index, tmp_path):
    loaded = Index.load(index.save(tmp_path / "idx"), embedder=_OtherEmbedder())
    assert loaded.search_bm25("PT-7716", 1)[0].chunk.id == "catalog.csv:17"  # BM25 needs no embedder
    with pytest.raises(TunewrightError, match="embedded with 'all-MiniLM-L6-v2'.*'another-model'; rebuild"):
        loaded.search("PT-7716", 1)


def test_chunks_of_stopwords_only_still_index(tmp_path):
    doc = tmp_path / "odd.md"
    doc.write_text("The.\n\nIt is.\n")
    built = build_index([doc], embedder=_OtherEmbedder())
    assert built.search_bm25("the", 3) == [] and [h.chunk.id for h in built.search("the", 3)] == ["odd.md:1", "odd.md:3"]
