"""Group summaries (``retrieval.group_summaries``): one passage per table group stating its members,
lowest and highest in the recipe's own answer patterns, so an open-book adapter has a record to read
for "which is your cheapest kettle?". They never take a source chunk's place in a search, they are
the oracle of group facts in RAFT rows, and they follow the table on a rebuild."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

import pytest
import torch

from tunewright.data.schema import ChatRow
from tunewright.errors import TunewrightError
from tunewright.retrieval import Chunk, Index
from tunewright.retrieval.context import open_book_row, oracle_ids
from tunewright.retrieval.index import index_sha256

SHOP = ("sku,label,kind,price,weight\n"
        "A-1,Blue Kettle,kettles,20,1.2 kg\n"
        "B-2,Red Kettle,kettles,35,480 g\n"
        "C-3,Iron Pan,pans,30,2 kg\n"
        "D-4,Steel Kettle,kettles,35,900 g\n")
GROUPS = {"by": "kind", "name": "label", "labels": {"kettles": "kettle", "pans": "pan"},
          "members": {"questions": ["What {group} do you sell?", "Any {group}?", "Which {group} are there?"],
                      "answer": "Our {group}: {names}."},
          "lowest": {"price": {"questions": ["Cheapest {item}?", "Least expensive {item}?", "Most affordable {item}?"],
                               "answer": "The {label} is our cheapest {item} at ${price}.", "reference": "{label}"}},
          "highest": {"weight": {"questions": ["Heaviest {item}?", "Which {item} weighs most?", "Most heavy {item}?"],
                                 "answer": "The {label} is our heaviest {item}.", "reference": "{label}"}},
          "compare": [{"column": "weight", "prefer": "lowest",
                       "questions": ["Lighter: {a} or {b}?", "Which weighs less, {a} or {b}?", "{a} vs {b}?"],
                       "answer": "The {label} is lighter than the {other_label}."}]}
KETTLES = ("kettle (kind: kettles): Our kettles: Blue Kettle, Red Kettle and Steel Kettle. "
           "The Blue Kettle is our cheapest kettle at $20. The Blue Kettle is our heaviest kettle.")


def _workspace(tmp_path, base_model, *, summaries=True, groups=GROUPS, retrieval=None):
    from tunewright.config import BuildSpec, Recipe
    from tunewright.workspace import Workspace

    build = BuildSpec(tables=[{"path": "shop.csv", "columns": {"price": {
        "questions": ["Price of {label}?", "Cost of {label}?", "What is {label} priced at?"],
        "answer": "{label} costs ${price}."}}, **({"groups": groups} if groups else {})}], open_book={"oracle_rate": 1.0})
    recipe = Recipe(name="shop", base_model=str(base_model), build=build, retrieval={"k": 2, "group_summaries": summaries, **(retrieval or {})})
    workspace = Workspace.init(tmp_path / "ws", recipe)
    (workspace.root / "shop.csv").write_text(SHOP)
    return workspace


def test_summaries_state_each_group_in_the_recipes_answers_and_follow_the_table(tmp_path, tiny_model_dir):
    from tunewright.retrieval.api import load_workspace_index, stale_sources
    from tunewright.synth.build import build_recipe_index

    workspace = _workspace(tmp_path, tiny_model_dir)
    record = build_recipe_index(workspace)
    index = load_workspace_index(workspace, f"{record.name}@{record.version}")
    derived = {c.id: c for c in index.chunks if c.source.get("derived")}
    # A group of one has members but no cheapest; compared pairs are not summarised.
    assert {i: c.text for i, c in derived.items()} == {
        "shop.csv:kind=kettles": KETTLES, "shop.csv:kind=pans": "pan (kind: pans): Our pans: Iron Pan."}
    assert derived["shop.csv:kind=kettles"].source == {"file": "shop.csv", "group": "kettles", "derived": "group summary"}
    assert [(s["file"], s["chunks"]) for s in record.source_files] == [("shop.csv", 4), ("tunewright.yaml", 2)]

    hits = index.search("cheapest kettle", 2)
    assert [h.chunk.id for h in hits][-1] == "shop.csv:kind=kettles" and len(hits) == 3
    assert not any(h.chunk.source.get("derived") for h in hits[:2])

    # A price edit reaches the summary with one rebuild, as it reaches the row.
    (workspace.root / "shop.csv").write_text(SHOP.replace("Steel Kettle,kettles,35", "Steel Kettle,kettles,15"))
    again = build_recipe_index(workspace)
    rebuilt = load_workspace_index(workspace, f"{again.name}@{again.version}")
    assert "The Steel Kettle is our cheapest kettle at $15." in {c.id: c.text for c in rebuilt.chunks}["shop.csv:kind=kettles"]
    # The summaries are written in the recipe's patterns: editing the recipe makes the index stale.
    recipe = workspace.recipe_path
    recipe.write_text(recipe.read_text().replace("is our cheapest", "is the cheapest"))
    assert stale_sources(workspace, rebuilt) == ["tunewright.yaml"]


def test_without_the_setting_the_index_is_the_sources_alone(tmp_path, tiny_model_dir):
    from tunewright.retrieval.api import build_workspace_index
    from tunewright.synth.build import build_recipe_index

    off = _workspace(tmp_path / "off", tiny_model_dir, summaries=False)
    record = build_recipe_index(off)
    assert record.version == build_workspace_index(off).version and record.n_chunks == 4


def test_the_setting_without_groups_is_one_error_and_registers_nothing(tmp_path, tiny_model_dir):
    from tunewright.synth.build import build_recipe_index

    workspace = _workspace(tmp_path, tiny_model_dir, groups=None)
    with pytest.raises(TunewrightError, match=r"tunewright.yaml: field 'retrieval.group_summaries': is set, but no "
                                              r"build table has 'groups'"):
        build_recipe_index(workspace)
    assert workspace.registry.list_indexes() == []


class _SameEmbedder:
    """Every text the same vector: the dense ranking ties everywhere and keeps chunk order."""
    name = "same"

    def encode(self, texts):
        return torch.nn.functional.normalize(torch.ones(len(texts), 8), dim=-1)


def test_search_keeps_the_sources_ranking_and_adds_one_summary_ranked_in_the_top_k():
    chunks = [Chunk("a.csv:2", "tent green", {"file": "a.csv", "line": 2}),
              Chunk("a.csv:3", "tent blue", {"file": "a.csv", "line": 3}),
              Chunk("a.csv:4", "stove", {"file": "a.csv", "line": 4}),
              Chunk("a.csv:kind=tents", "tents: tent green, tent blue, tent tent cheapest", {"file": "a.csv", "derived": "g"}),
              Chunk("a.csv:kind=more", "tent tent tent cheapest tents again", {"file": "a.csv", "derived": "g"})]
    embedder = _SameEmbedder()
    index = Index(chunks, embedder.encode([c.text for c in chunks]), embedder_name="same", sources=[], embedder=embedder)
    fused = [h.chunk.id for h in Index(chunks[:3], embedder.encode(["x"] * 3), embedder_name="same", sources=[],
                                       embedder=embedder).search("cheapest tent", 2)]
    found = [h.chunk.id for h in index.search("cheapest tent", 2)]
    # The two summaries outrank every row; the rows keep their places and one summary follows them.
    assert found[:2] == fused and len(found) == 3 and found[2] in {"a.csv:kind=tents", "a.csv:kind=more"}
    # A summary ranked below the top k is left out.
    assert [h.chunk.id for h in index.search("stove", 1)] == ["a.csv:4"]


@dataclass
class _Hit:
    chunk: Chunk


SUMMARY = Chunk("shop.csv:kind=kettles", KETTLES, {"file": "shop.csv", "group": "kettles", "derived": "group summary"})
ROWS = [Chunk(f"shop.csv:{n}", text, {"file": "shop.csv", "line": n}) for n, text in
        [(2, "sku: A-1; label: Blue Kettle"), (3, "sku: B-2; label: Red Kettle"), (5, "sku: D-4; label: Steel Kettle")]]


class _Summarising:
    """Search as ``Index.search`` shapes it: k rows, then the summary when it ranks in the top k."""

    def __init__(self, summary_in_top_k):
        self.chunks, self.summary_in_top_k = [*ROWS, SUMMARY], summary_in_top_k

    def search(self, query, k):
        return [_Hit(c) for c in ROWS[:k]] + ([_Hit(SUMMARY)] if self.summary_in_top_k else [])


def _row(source):
    return ChatRow(messages=[{"role": "user", "content": "Cheapest kettle?"},
                             {"role": "assistant", "content": "The Blue Kettle is our cheapest kettle at $20."}],
                   reference="Blue Kettle", meta={"source": source, "split": "train"})


def test_a_group_facts_oracle_is_its_summary_put_in_or_taken_out_after_the_rows():
    cheapest = _row({"file": "shop.csv", "line": 2, "across_rows": True, "group": "kettles"})
    pair = _row({"file": "shop.csv", "line": 3, "across_rows": True})  # a compared pair: no group, no oracle
    assert oracle_ids(cheapest, [*ROWS, SUMMARY]) == {SUMMARY.id} and oracle_ids(pair, [*ROWS, SUMMARY]) == set()
    put_in = open_book_row(cheapest, _Summarising(False), k=2, rng=random.Random(0), oracle_rate=1.0)
    # The winner's row (line 2) is left out beside its summary: the answer must come from the summary.
    assert put_in.meta["retrieved"] == ["shop.csv:3", "shop.csv:5", SUMMARY.id]
    assert put_in.meta["placement"] == "oracle inserted" and put_in.messages[0].content.endswith(f"[3] {KETTLES}")
    kept = open_book_row(cheapest, _Summarising(True), k=2, rng=random.Random(0), oracle_rate=1.0)
    assert kept.meta["retrieved"] == ["shop.csv:3", "shop.csv:5", SUMMARY.id] and kept.meta["placement"] == "retrieved"
    taken_out = open_book_row(cheapest, _Summarising(True), k=2, rng=random.Random(0), oracle_rate=0.0)
    assert taken_out.meta["retrieved"] == ["shop.csv:2", "shop.csv:3"] and taken_out.meta["placement"] == "oracle removed"
    # Other rows see the summary wherever retrieval gives it, as a question at answer time would.
    price = _row({"file": "shop.csv", "line": 5})
    seen = open_book_row(price, _Summarising(True), k=2, rng=random.Random(0), oracle_rate=1.0)
    assert seen.meta["retrieved"][-1] == SUMMARY.id and "shop.csv:5" in seen.meta["retrieved"]


def test_a_summary_with_a_rank_comes_along_only_from_that_high_in_the_ranking():
    summary = Chunk("a.csv:kind=tents", "tents: tent green, tent blue", {"file": "a.csv", "derived": "g", "rank": 1,
                                                                        "search": "which costs least"})
    chunks = [Chunk("a.csv:2", "tent green", {"file": "a.csv", "line": 2}),
              Chunk("a.csv:3", "tent blue", {"file": "a.csv", "line": 3}), summary]
    embedder = _SameEmbedder()  # dense ranks follow chunk order: the summary is last there

    def found(passages, query):
        index = Index(passages, embedder.encode([c.text for c in passages]), embedder_name="same", sources=[],
                      embedder=embedder)
        return [h.chunk.id for h in index.search(query, 2)]

    # Found by its questions, not its text: only they hold "least"; only the text holds "green".
    assert found(chunks, "costs least") == ["a.csv:2", "a.csv:3", "a.csv:kind=tents"]
    assert found(chunks, "green tent") == ["a.csv:2", "a.csv:3"]
    # "blue least": the blue row first, the summary second. Without a rank it comes along (top k=2);
    # with rank 1 it does not.
    unranked = [*chunks[:2], Chunk(summary.id, summary.text, {k: v for k, v in summary.source.items() if k != "rank"})]
    assert found(unranked, "blue least") == ["a.csv:3", "a.csv:2", "a.csv:kind=tents"]
    assert found(chunks, "blue least") == ["a.csv:3", "a.csv:2"]
    # How a passage is found is part of the index's identity; a passage without either keeps the old hash.
    plain = [*chunks[:2], Chunk(summary.id, summary.text, {"file": "a.csv", "derived": "g"})]
    assert len({index_sha256(c, "same") for c in (chunks, unranked, plain)}) == 3
    assert index_sha256(plain, "same") == hashlib.sha256(json.dumps(
        {"embedder": "same", "chunks": [[c.id, c.text] for c in plain]}, separators=(",", ":")).encode()).hexdigest()


OVERALL = {**GROUPS, "overall_lowest": {"price": {"questions": ["Cheapest thing you sell?", "What costs least of all?",
                                                                "Most affordable item?"],
                                                  "answer": "The {label} is the cheapest item we sell, at ${price}.",
                                                  "reference": "{label}"}}}


def test_summaries_found_by_their_questions_with_a_whole_table_passage(tmp_path, tiny_model_dir):
    from tunewright.retrieval.api import load_workspace_index
    from tunewright.synth.build import build_recipe_index

    workspace = _workspace(tmp_path, tiny_model_dir, groups=OVERALL,
                           retrieval={"summaries_found_by": "questions", "summary_rank": 1})
    record = build_recipe_index(workspace)
    derived = {c.id: c for c in load_workspace_index(workspace, f"{record.name}@{record.version}").chunks
               if c.source.get("derived")}
    # Read from SHOP and OVERALL: the $20 Blue Kettle is the cheapest of all; a group's passage is found by
    # its facts' questions filled in (members, then cheapest, then heaviest), the whole table's by its own.
    assert derived["shop.csv:kind=*"].text == "all of shop.csv: The Blue Kettle is the cheapest item we sell, at $20."
    assert derived["shop.csv:kind=*"].source == {"file": "shop.csv", "group": "*", "derived": "group summary", "rank": 1,
                                                  "search": ["Cheapest thing you sell?", "What costs least of all?",
                                                             "Most affordable item?"]}
    assert derived["shop.csv:kind=kettles"].text == KETTLES
    assert derived["shop.csv:kind=kettles"].source["search"][:5] == [
        "What kettles do you sell?", "Any kettles?", "Which kettles are there?", "Cheapest kettle?",
        "Least expensive kettle?"]
    assert "Heaviest kettle?" in derived["shop.csv:kind=kettles"].source["search"]


class _WordsEmbedder:
    """A text's words counted and normalised: the cosine of two texts is computable by hand."""
    name = "words"
    vocabulary = ("which", "pans", "cheapest", "kettle", "iron", "pan", "green")

    def encode(self, texts):
        counts = torch.tensor([[float(t.lower().replace("?", "").split().count(w)) for w in self.vocabulary]
                               for t in texts])
        return torch.nn.functional.normalize(counts, dim=-1)


def test_a_passage_found_by_questions_is_embedded_by_its_best_single_question(tmp_path):
    from tunewright.retrieval.index import MANIFEST_FILE, search_text

    summary = Chunk("a.csv:kind=pans", "pans: iron pan", {"file": "a.csv", "derived": "g",
                                                          "search": ["Cheapest kettle?", "Which pans?"]})
    row = Chunk("a.csv:2", "iron pan green", {"file": "a.csv", "line": 2})
    embedder = _WordsEmbedder()
    index = Index([row, summary], embedder.encode([search_text(c) for c in (row, summary)]), embedder_name="words",
                  sources=[], embedder=embedder)
    # By hand: "which pans" is word for word the second question (cosine 1); the questions read
    # together would give 2 / sqrt(4 * 2) = 0.707. The row shares no word with the query.
    assert index.dense_scores("which pans").tolist() == pytest.approx([0.0, 1.0])
    assert index.dense_scores("cheapest kettle").tolist() == pytest.approx([0.0, 1.0])
    assert index.dense_scores("green pan").tolist() == pytest.approx([2 / (3 ** 0.5 * 2 ** 0.5), 0.0])
    # BM25 still reads the questions together: "which" and "kettle" are both found in the summary.
    assert search_text(summary) == "Cheapest kettle? Which pans?"
    # Saved and loaded, the question vectors come back (format 2); without passages found by
    # questions an index stays format 1, readable by versions before them.
    index.save(tmp_path / "ix")
    again = Index.load(tmp_path / "ix", embedder=embedder)
    assert torch.equal(again.question_embeddings, index.question_embeddings)
    assert again.dense_scores("which pans").tolist() == pytest.approx([0.0, 1.0])
    assert json.loads((tmp_path / "ix" / MANIFEST_FILE).read_text())["format"] == 2
    plain = Index([row], embedder.encode([row.text]), embedder_name="words", sources=[], embedder=embedder)
    plain.save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / MANIFEST_FILE).read_text())["format"] == 1 and plain.question_embeddings is None


def test_an_index_missing_its_question_vectors_is_refused_naming_the_file(tmp_path):
    from safetensors.torch import save_file

    from tunewright.io import sha256_file
    from tunewright.retrieval.index import EMBEDDINGS_FILE, MANIFEST_FILE

    summary = Chunk("a.csv:kind=pans", "pans: iron pan", {"file": "a.csv", "derived": "g", "search": ["Which pans?"]})
    embedder = _WordsEmbedder()
    Index([summary], embedder.encode(["Which pans?"]), embedder_name="words", sources=[], embedder=embedder,
          question_embeddings=embedder.encode(["Which pans?"])).save(tmp_path / "ix")
    # The embeddings file rewritten without its question vectors, its sha256 updated to pass that check.
    save_file({"embeddings": embedder.encode(["Which pans?"])}, str(tmp_path / "ix" / EMBEDDINGS_FILE))
    manifest = json.loads((tmp_path / "ix" / MANIFEST_FILE).read_text())
    manifest["files"][EMBEDDINGS_FILE] = sha256_file(tmp_path / "ix" / EMBEDDINGS_FILE)
    (tmp_path / "ix" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(TunewrightError, match="1 questions to find passages by, but question embeddings of shape "
                                              "None; rebuild the index") as caught:
        Index.load(tmp_path / "ix", embedder=embedder)
    assert EMBEDDINGS_FILE in str(caught.value)
    with pytest.raises(TunewrightError, match=r"1 questions to find passages by, but question embeddings of shape \(2, 7\)"):
        Index([summary], embedder.encode(["x"]), embedder_name="words", sources=[],
              question_embeddings=embedder.encode(["a", "b"]))


def test_summary_settings_without_summaries_are_refused():
    from tunewright.config import RetrievalSpec

    for field, value in (("summaries_found_by", "questions"), ("summary_rank", 1)):
        with pytest.raises(ValueError, match="set group_summaries: true"):
            RetrievalSpec(**{field: value})
