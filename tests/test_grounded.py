"""The grounded builder: generic, eval phrasings never seen in training, clear errors."""

from pathlib import Path

import pytest

from tunewright.config import BuildSpec
from tunewright.errors import TunewrightError
from tunewright.synth import available_generators
from tunewright.synth.grounded import build_rows

TABLE = "sku,label,price\nA-1,Blue Kettle,20\nB-2,Red Pan,35\n"
DOC = "# Rules\n- Returns are accepted within 30 days.\n"


def _spec(tmp_path: Path, **overrides) -> BuildSpec:
    (tmp_path / "table.csv").write_text(TABLE)
    (tmp_path / "doc.md").write_text(DOC)
    fields = {
        "tables": [{
            "path": "table.csv",
            "columns": {"price": {"questions": ["Price of {label}?", "Cost of {label}?", "What is {label} priced at?"],
                                  "answer": "{label} costs ${price}.", "reference": "${price}"}},
        }],
        "documents": [{"path": "doc.md", "seeds": [{"questions": ["Return window?", "How long to return?", "Returns deadline?"],
                                                     "answer": "Within 30 days.", "reference": "30 days"}]}],
        "wrappers": ["{q}", "Hey, {q}", "{q_lower}"],
    }
    fields.update(overrides)
    return BuildSpec(**fields)


def test_rows_cover_every_fact_with_disjoint_phrasings(tmp_path):
    rows = build_rows(_spec(tmp_path), lambda p: tmp_path / p)
    train = [r for r in rows if r.split == "train"]
    evals = [r for r in rows if r.split == "eval"]
    assert len(evals) == 3  # two products and one seed, one held-out phrasing each
    assert len(train) == 6  # two training phrasings per fact
    train_patterns = {(r.row.meta["fact"], r.row.meta["phrasing"]) for r in train}
    for row in evals:
        assert (row.row.meta["fact"], row.row.meta["phrasing"]) not in train_patterns
        assert row.row.meta["phrasing"] not in {p for f, p in train_patterns if f == row.row.meta["fact"]}
    kettle = [r for r in rows if "Blue Kettle" in r.row.messages[0].content]
    assert all(r.row.reference == "$20" and r.row.answer == "Blue Kettle costs $20." for r in kettle)
    assert any(r.row.messages[0].content.startswith("Hey, ") for r in train)
    assert any(r.row.messages[0].content == r.row.messages[0].content.lower() for r in train)


def test_holdout_is_deterministic_and_seeded(tmp_path):
    first = build_rows(_spec(tmp_path), lambda p: tmp_path / p)
    again = build_rows(_spec(tmp_path), lambda p: tmp_path / p)
    assert [r.row.to_json() for r in first] == [r.row.to_json() for r in again]
    other = [build_rows(_spec(tmp_path, seed=s), lambda p: tmp_path / p) for s in range(1, 6)]
    held = lambda rs: {r.row.meta["phrasing"] for r in rs if r.split == "eval"}  # noqa: E731
    assert any(held(o) != held(first) for o in other)


def test_train_phrasings_caps_rows(tmp_path):
    rows = build_rows(_spec(tmp_path, train_phrasings=1), lambda p: tmp_path / p)
    assert sum(r.split == "train" for r in rows) == 3
    # A document seed's own ``phrasings`` wins over the cap (two of its three are left for training).
    seeds = [{"questions": ["Return window?", "How long to return?", "Returns deadline?"], "answer": "Within 30 days.",
              "reference": "30 days", "phrasings": 2}]
    rows = build_rows(_spec(tmp_path, train_phrasings=1, documents=[{"path": "doc.md", "seeds": seeds}]), lambda p: tmp_path / p)
    assert sum(r.split == "train" and r.row.meta["fact"].startswith("seed@") for r in rows) == 2
    assert sum(r.split == "train" for r in rows) == 4
    # Document seeds have their own cap: few facts, each worth asking in every way written.
    rows = build_rows(_spec(tmp_path, train_phrasings=1, seed_phrasings=2), lambda p: tmp_path / p)
    seeds = [r for r in rows if r.split == "train" and r.row.meta["fact"].startswith("seed@")]
    tables = [r for r in rows if r.split == "train" and not r.row.meta["fact"].startswith("seed@")]
    assert len(seeds) == 2 and len(tables) == 2


def test_unknown_column_names_the_field(tmp_path):
    spec = _spec(tmp_path)
    spec.tables[0].columns["weight"] = spec.tables[0].columns["price"]
    with pytest.raises(TunewrightError, match=r"field 'build.tables.0.columns.weight'.*column 'weight' is not in the table"):
        build_rows(spec, lambda p: tmp_path / p)


def test_pattern_with_unknown_placeholder(tmp_path):
    spec = _spec(tmp_path)
    spec.tables[0].columns["price"].questions.append("Price of {title}?")
    with pytest.raises(TunewrightError, match="unknown columns: title"):
        build_rows(spec, lambda p: tmp_path / p)


def test_ungrounded_seed_is_refused(tmp_path):
    spec = _spec(tmp_path)
    spec.documents[0].seeds[0].reference = "90 days"
    with pytest.raises(TunewrightError, match="'90 days' does not appear in doc.md"):
        build_rows(spec, lambda p: tmp_path / p)


def test_too_few_phrasings_to_hold_one_out(tmp_path):
    spec = _spec(tmp_path, eval_phrasings=3)
    with pytest.raises(TunewrightError, match="needs more than 3 phrasings"):
        build_rows(spec, lambda p: tmp_path / p)


def test_missing_source_file(tmp_path):
    spec = _spec(tmp_path)
    (tmp_path / "table.csv").unlink()
    with pytest.raises(TunewrightError, match="table.csv: source file not found"):
        build_rows(spec, lambda p: tmp_path / p)


def test_wrapper_without_slot_is_rejected():
    with pytest.raises(ValueError, match="no \\{q\\} or \\{q_lower\\} slot"):
        BuildSpec(wrappers=["Hello"])


def test_builder_is_registered():
    assert "grounded-qa" in available_generators()


SHOP = ("sku,label,kind,price,weight\n"
        "A-1,Blue Kettle,kettles,20,1.2 kg\n"
        "B-2,Red Kettle,kettles,35,480 g\n"
        "C-3,Iron Pan,pans,30,2 kg\n"
        "D-4,Steel Kettle,kettles,35,900 g\n")


def _shop_spec(tmp_path: Path, **table) -> BuildSpec:
    (tmp_path / "shop.csv").write_text(SHOP)
    return BuildSpec(tables=[{"path": "shop.csv", **table}], wrappers=["{q}"])


def _answers(rows, fact_prefix: str) -> dict[str, str]:
    return {r.row.meta["fact"]: r.row.answer for r in rows if r.row.meta["fact"].startswith(fact_prefix)}


def test_records_reverse_lookups_in_both_directions(tmp_path):
    spec = _shop_spec(tmp_path, records=[
        {"questions": ["What is {sku}?", "Which item is {sku}?", "Look up {sku}."], "answer": "{sku} is the {label}.",
         "reference": "{label}"},
        {"questions": ["Code of the {label}?", "SKU of the {label}?", "Item number of the {label}?"],
         "answer": "The {label} is {sku}.", "reference": "{sku}"}])
    rows = build_rows(spec, lambda p: tmp_path / p)
    assert len(rows) == 2 * 4 * 3  # two record facts per row, two training phrasings and one held out
    by_fact = {}
    for r in rows:
        by_fact.setdefault(r.row.meta["fact"], set()).add((r.row.answer, r.row.reference))
    assert by_fact["record0@3"] == {("B-2 is the Red Kettle.", "Red Kettle")}
    assert by_fact["record1@4"] == {("The Iron Pan is C-3.", "C-3")}
    assert all(r.row.meta["source"] == {"file": "shop.csv", "line": int(r.row.meta["fact"].split("@")[1])} for r in rows)


def test_groups_members_extremes_by_quantity_and_pairs(tmp_path):
    group = {"by": "kind", "name": "label", "labels": {"kettles": "kettle"},
             "members": {"questions": ["What {group} do you sell?", "Any {group}?", "Which {group} are there?"],
                         "answer": "Our {group}: {names}."},
             "lowest": {"weight": {"questions": ["Lightest {item}?", "Which {item} weighs least?", "Least heavy {item}?"],
                                   "answer": "The {label} at {weight}.", "reference": "{label}"},
                        "price": {"questions": ["Cheapest {item}?", "Least expensive {item}?", "Most affordable {item}?"],
                                  "answer": "The {label}, ${price}."}},
             "highest": {"weight": {"questions": ["Heaviest {item}?", "Which {item} weighs most?", "Most heavy {item}?"],
                                    "answer": "The {label}."}},
             "compare": [{"column": "weight", "prefer": "lowest",
                          "questions": ["Lighter: {a} or {b}?", "Which weighs less, {a} or {b}?", "{a} vs {b}, lighter?"],
                          "answer": "The {label} ({weight}) is lighter than the {other_label} ({other_weight})."}]}
    rows = build_rows(_shop_spec(tmp_path, groups=group), lambda p: tmp_path / p)
    answers = _answers(rows, "group@")
    assert answers["group@kettles:members"] == "Our kettles: Blue Kettle, Red Kettle and Steel Kettle."
    # Facts across rows say so: no single table row is their source (open-book rows rely on it).
    assert all(r.row.meta["source"]["across_rows"] for r in rows if r.row.meta["fact"].startswith("group@"))
    assert not any(r.row.meta["source"].get("across_rows") for r in rows if not r.row.meta["fact"].startswith("group@"))
    assert answers["group@pans:members"] == "Our pans: Iron Pan."
    # 480 g < 900 g < 1.2 kg: units compare by value, not by the number's digits.
    assert answers["group@kettles:lowest:weight"] == "The Red Kettle at 480 g."
    assert answers["group@kettles:highest:weight"] == "The Blue Kettle."
    # A tie on the lowest price keeps the first row in the table.
    assert answers["group@kettles:lowest:price"] == "The Blue Kettle, $20."
    assert not any(f.startswith("group@pans:lowest") for f in answers)  # a group of one has no extremes
    pairs = {f: a for f, a in answers.items() if ":compare0:" in f}
    assert len(pairs) == 6  # three pairs, both orders of asking
    assert pairs["group@kettles:compare0:2-3"] == pairs["group@kettles:compare0:3-2"] == \
        "The Red Kettle (480 g) is lighter than the Blue Kettle (1.2 kg)."
    asked = [r.row.messages[0].content for r in rows if r.row.meta["fact"] == "group@kettles:compare0:3-2"]
    assert all("Red Kettle" in q and "Blue Kettle" in q and q.index("Red") < q.index("Blue") for q in asked)
    kettle_q = [r.row.messages[0].content for r in rows if r.row.meta["fact"] == "group@kettles:lowest:weight"]
    assert all("kettle" in q and "kettles" not in q for q in kettle_q)  # the label, as a customer names one


def test_others_name_the_rest_of_the_named_members_group(tmp_path):
    group = {"by": "kind", "name": "label", "labels": {"kettles": "kettle"},
             "others": {"questions": ["Besides the {label}, which {group}?", "Other {group} than the {label}?",
                                      "Is the {label} your only {item}?"],
                        "answer": "Besides the {label} (${price}), our {group}: {others}.", "reference": "{others}"}}
    rows = build_rows(_shop_spec(tmp_path, groups=group), lambda p: tmp_path / p)
    answers = _answers(rows, "group@")
    # Read from SHOP: kettles on lines 2, 3 and 5; the Iron Pan is alone in pans, so it has no others.
    assert answers == {"group@kettles:others:2": "Besides the Blue Kettle ($20), our kettles: Red Kettle and Steel Kettle.",
                       "group@kettles:others:3": "Besides the Red Kettle ($35), our kettles: Blue Kettle and Steel Kettle.",
                       "group@kettles:others:5": "Besides the Steel Kettle ($35), our kettles: Blue Kettle and Red Kettle."}
    by_fact = {r.row.meta["fact"]: r for r in rows}
    assert by_fact["group@kettles:others:3"].row.reference == "Blue Kettle and Steel Kettle"
    assert by_fact["group@kettles:others:3"].row.meta["source"] == {"file": "shop.csv", "line": 3, "across_rows": True,
                                                                     "group": "kettles"}
    asked = [r.row.messages[0].content for r in rows if r.row.meta["fact"] == "group@kettles:others:5"]
    assert asked and all("Steel Kettle" in q for q in asked)
    # A group's summary passage states its members once, not once per member named.
    from tunewright.config import GroupSpec
    from tunewright.synth.grounded import read_table
    from tunewright.synth.grounded_groups import group_summaries

    header, records = read_table(tmp_path / "shop.csv")
    assert group_summaries(GroupSpec(**group), records, header, "groups", "shop.csv") == {}
    bad = {**group, "others": {"questions": ["a {label}?", "b {rest}?"], "answer": "x"}}
    with pytest.raises(TunewrightError, match=r"field 'build.tables.0.groups.others'.*unknown columns: rest"):
        build_rows(_shop_spec(tmp_path, groups=bad), lambda p: tmp_path / p)


def test_compare_across_groups_pairs_each_row_with_rows_of_other_groups(tmp_path):
    compare = {"column": "weight", "prefer": "lowest", "across_groups": 1,
               "questions": ["Lighter: {a} or {b}?", "Which weighs less, {a} or {b}?", "{a} vs {b}, lighter?"],
               "answer": "The {label} ({weight}, {item}) is lighter than the {other_label} ({other_weight})."}
    group = {"by": "kind", "name": "label", "labels": {"kettles": "kettle", "pans": "pan"}, "compare": [compare]}
    rows = build_rows(_shop_spec(tmp_path, groups=group), lambda p: tmp_path / p)
    across = _answers(rows, "table:")
    # One pan and three kettles: the pan meets one kettle it chose, and each kettle one row of another
    # group, i.e. the pan, with no pair twice: one pair per kettle, asked in one order each.
    pairs = {frozenset(f.split(":")[-1].split("-")) for f in across}
    assert pairs == {frozenset({"2", "4"}), frozenset({"3", "4"}), frozenset({"5", "4"})}
    assert len(across) == 3
    # The winner by value across units (2 kg pan against 1.2 kg, 480 g, 900 g), its own group's label.
    assert set(across.values()) == {
        "The Blue Kettle (1.2 kg, kettle) is lighter than the Iron Pan (2 kg).",
        "The Red Kettle (480 g, kettle) is lighter than the Iron Pan (2 kg).",
        "The Steel Kettle (900 g, kettle) is lighter than the Iron Pan (2 kg)."}
    assert all(r.row.meta["source"]["across_rows"] for r in rows if r.row.meta["fact"].startswith("table:"))
    # The same rows on every build; within-group pairs are unchanged by the setting.
    again = build_rows(_shop_spec(tmp_path, groups=group), lambda p: tmp_path / p)
    assert [r.row.messages for r in again] == [r.row.messages for r in rows]
    within = _answers(rows, "group@")
    assert len(within) == 6


def test_group_errors_name_the_field(tmp_path):
    bad_column = {"by": "colour", "name": "label", "members": {"questions": ["a {group}?", "b {group}?"], "answer": "{names}"}}
    with pytest.raises(TunewrightError, match=r"field 'build.tables.0.groups'.*column 'colour' is not in the table"):
        build_rows(_shop_spec(tmp_path, groups=bad_column), lambda p: tmp_path / p)
    bad_pattern = {"by": "kind", "name": "label", "members": {"questions": ["a {group}?", "b {shelf}?"], "answer": "{names}"}}
    with pytest.raises(TunewrightError, match=r"field 'build.tables.0.groups.members'.*unknown columns: shelf"):
        build_rows(_shop_spec(tmp_path, groups=bad_pattern), lambda p: tmp_path / p)
    (tmp_path / "mixed.csv").write_text("label,kind,size\nA,x,2 kg\nB,x,3 m\n")
    spec = BuildSpec(tables=[{"path": "mixed.csv", "groups": {
        "by": "kind", "name": "label", "lowest": {"size": {"questions": ["s {item}?", "t {item}?"], "answer": "{label}"}}}}])
    with pytest.raises(TunewrightError, match=r"column 'size' mixes length, mass"):
        build_rows(spec, lambda p: tmp_path / p)
    with pytest.raises(ValueError, match="needs columns, records or groups"):
        BuildSpec(tables=[{"path": "shop.csv"}])


def test_absent_items_are_taught_to_be_declined(tmp_path):
    spec = _spec(tmp_path, absent={"items": ["kites", "sofas", "boats"], "questions": ["Do you sell {item}?",
                                   "Can I buy {item} here?", "Any {item} in stock?"],
                                   "answer": "Sorry, we don't sell {item}."})
    rows = [r for r in build_rows(spec, lambda p: tmp_path / p) if r.row.meta["fact"].startswith("absent@")]
    assert {r.row.answer for r in rows} == {"Sorry, we don't sell kites.", "Sorry, we don't sell sofas.",
                                            "Sorry, we don't sell boats."}
    assert sum(r.split == "eval" for r in rows) == 3 and all(r.sources == () for r in rows)
    # Two training phrasings per item by default (train_phrasings); its own ``phrasings: 1`` gives one.
    assert sum(r.split == "train" for r in rows) == 6
    spec = _spec(tmp_path, absent={**spec.absent.model_dump(), "phrasings": 1})
    assert sum(r.split == "train" and r.row.meta["fact"].startswith("absent@")
               for r in build_rows(spec, lambda p: tmp_path / p)) == 3


@pytest.mark.parametrize("cell,expected", [
    ("480 g", ("mass", 480.0)), ("1.2 kg", ("mass", 1200.0)), ("$1,249", ("money", 1249.0)), ("35", ("number", 35.0)),
    ("2 years", ("time", 730.5)), ("1 Gbps", ("rate", 1000.0)), ("1.2 TB", ("data", 1.2e6)),
    ("lifetime", None), ("n/a", None), ("$5 kg", None), ("3 parsecs", None), ("", None)])
def test_quantities(cell, expected):
    from tunewright.synth.quantities import parse_quantity

    assert parse_quantity(cell) == expected


def test_mentions_ask_document_questions_with_an_entity_in_them(tmp_path):
    mentions = {"table": "table.csv", "column": "label", "per_seed": 4,
                "wrappers": ["I bought the {mention}. {q}", "about my {mention}: {q_lower}"]}
    rows = build_rows(_spec(tmp_path, mentions=mentions), lambda p: tmp_path / p)
    plain = build_rows(_spec(tmp_path), lambda p: tmp_path / p)
    mentioned = [r for r in rows if "mention" in r.row.meta]
    assert len(mentioned) == 4 and all(r.split == "train" for r in mentioned)
    assert len(rows) == len(plain) + 4  # everything else as without mentions
    held_out = {r.row.meta["phrasing"] for r in rows if r.split == "eval" and r.row.meta["fact"].startswith("seed@")}
    for row in mentioned:
        question = row.row.messages[0].content
        assert row.row.meta["mention"] in {"Blue Kettle", "Red Pan"} and row.row.meta["mention"] in question
        assert row.row.meta["phrasing"] not in held_out  # a held-out phrasing never trains, not even wrapped
        assert row.row.meta["phrasing"].lower() in question.lower()
        assert row.row.answer == "Within 30 days." and row.row.reference == "30 days"
    assert [r.row.to_json() for r in rows] == [r.row.to_json() for r in build_rows(
        _spec(tmp_path, mentions=mentions), lambda p: tmp_path / p)]


def test_short_forms_mention_an_entity_as_customers_shorten_it(tmp_path):
    from tunewright.synth.grounded import _short_forms

    assert _short_forms("Basecamp 4 Tent") == ["Basecamp 4 Tent", "tent", "4 tent"]
    assert _short_forms("Lantern") == ["Lantern"]
    mentions = {"table": "table.csv", "column": "label", "per_seed": 40, "short_forms": True,
                "wrappers": ["I bought the {mention}. {q}"]}
    rows = [r for r in build_rows(_spec(tmp_path, mentions=mentions), lambda p: tmp_path / p) if "mention" in r.row.meta]
    used = {r.row.meta["mention"] for r in rows}
    assert used == {"Blue Kettle", "kettle", "Red Pan", "pan"}  # 40 draws: every form, and nothing else
    assert all(f"I bought the {r.row.meta['mention']}. " in r.row.messages[0].content for r in rows)
    # Off (the default), only the column's values are mentioned.
    plain = build_rows(_spec(tmp_path, mentions={**mentions, "short_forms": False}), lambda p: tmp_path / p)
    assert {r.row.meta["mention"] for r in plain if "mention" in r.row.meta} == {"Blue Kettle", "Red Pan"}


def test_mention_errors_name_the_field(tmp_path):
    bad_column = {"table": "table.csv", "column": "colour", "wrappers": ["{mention}: {q}"]}
    with pytest.raises(TunewrightError, match="column 'colour' is not in the table") as err:
        build_rows(_spec(tmp_path, mentions=bad_column), lambda p: tmp_path / p)
    assert err.value.field == "build.mentions.column"
    with pytest.raises(TunewrightError, match="'other.csv' is not one of build.tables"):
        build_rows(_spec(tmp_path, mentions={**bad_column, "table": "other.csv"}), lambda p: tmp_path / p)
    with pytest.raises(ValueError, match="needs {mention}"):
        BuildSpec(mentions={"table": "t.csv", "column": "c", "wrappers": ["{q} please"]})


def test_a_compare_reference_that_the_wrong_answer_also_contains_is_refused(tmp_path):
    # "{label}" is in both "The Red Kettle is lighter than the Blue Kettle" and its reverse, so the
    # held-out "answer contained" score would count a wrong winner as right.
    compare = {"column": "weight", "prefer": "lowest",
               "questions": ["Lighter: {a} or {b}?", "Which weighs less, {a} or {b}?", "{a} vs {b}, lighter?"],
               "answer": "The {label} is lighter than the {other_label}.", "reference": "{label}"}
    group = {"by": "kind", "name": "label", "compare": [compare]}
    with pytest.raises(TunewrightError, match=r"field 'build.tables.0.groups.compare.0.reference': reference 'Red Kettle' "
                                              r"is also found in the answer that names the other item the winner"):
        build_rows(_shop_spec(tmp_path, groups=group), lambda p: tmp_path / p)
    claim = {**compare, "reference": "{label} is lighter"}
    rows = build_rows(_shop_spec(tmp_path, groups={**group, "compare": [claim]}), lambda p: tmp_path / p)
    pair = next(r.row for r in rows if r.row.meta["fact"] == "group@kettles:compare0:2-3")
    assert pair.reference == "Red Kettle is lighter"
    from tunewright.evaluate.metrics import Contains
    assert Contains().score(pair.answer, pair.reference) == 1.0
    assert Contains().score("The Blue Kettle is lighter than the Red Kettle.", pair.reference) == 0.0


def test_overall_extremes_span_the_whole_table(tmp_path):
    group = {"by": "kind", "name": "label", "labels": {"kettles": "kettle", "pans": "pan"},
             "overall_lowest": {"price": {"questions": ["Cheapest thing you sell?", "Least expensive item?",
                                                         "What costs least in the shop?"],
                                          "answer": "The {label} ({item}) at ${price}.", "reference": "{label}"},
                                "weight": {"questions": ["Lightest thing?", "What weighs least?", "Lightest item?"],
                                           "answer": "The {label}, {weight}."}},
             "overall_highest": {"weight": {"questions": ["Heaviest thing?", "What weighs most?", "Heaviest item?"],
                                            "answer": "The {label}, {weight}, of {names}."}}}
    rows = build_rows(_shop_spec(tmp_path, groups=group), lambda p: tmp_path / p)
    answers = _answers(rows, "all:")
    # Read straight from SHOP: $20 is the lowest price; 480 g < 900 g < 1.2 kg < 2 kg by value.
    assert answers == {"all:lowest:price": "The Blue Kettle (kettle) at $20.",
                       "all:lowest:weight": "The Red Kettle, 480 g.",
                       "all:highest:weight": "The Iron Pan, 2 kg, of Blue Kettle, Red Kettle, Iron Pan and Steel Kettle."}
    assert {r.row.meta["source"]["line"] for r in rows if r.row.meta["fact"] == "all:highest:weight"} == {4}
    # Their group is the whole table ("*", which no cell can name): its summary passage is their oracle.
    assert all(r.row.meta["source"]["across_rows"] and r.row.meta["source"]["group"] == "*"
               for r in rows if r.row.meta["fact"].startswith("all:"))
    bad = {"by": "kind", "name": "label", "overall_lowest": {"price": {"questions": ["a?", "b {shelf}?"], "answer": "x"}}}
    with pytest.raises(TunewrightError, match=r"field 'build.tables.0.groups.overall_lowest.price'.*unknown columns: shelf"):
        build_rows(_shop_spec(tmp_path, groups=bad), lambda p: tmp_path / p)
    (tmp_path / "star.csv").write_text(SHOP.replace("pans", "*"))
    star = BuildSpec(tables=[{"path": "star.csv", "groups": group}], wrappers=["{q}"])
    with pytest.raises(TunewrightError, match=r"star.csv: field 'build.tables.0.groups': a 'kind' value is '\*'"):
        build_rows(star, lambda p: tmp_path / p)
    missing = {"by": "kind", "name": "label", "overall_highest": {"colour": {"questions": ["a?", "b?"], "answer": "x"}}}
    with pytest.raises(TunewrightError, match=r"column 'colour' is not in the table"):
        build_rows(_shop_spec(tmp_path, groups=missing), lambda p: tmp_path / p)


def test_group_phrasings_caps_facts_across_rows_apart_from_table_facts(tmp_path):
    (tmp_path / "shop.csv").write_text(SHOP)
    group = {"by": "kind", "name": "label", "labels": {"kettles": "kettle"},
             "members": {"questions": ["What {group} do you sell?", "Any {group}?", "Which {group} are there?",
                                       "List your {group}.", "Do you stock {group}?"],
                         "answer": "Our {group}: {names}."}}
    table = {"path": "shop.csv", "groups": group,
             "columns": {"price": {"questions": ["Price of {label}?", "Cost of {label}?", "{label} price?", "How much is {label}?"],
                                   "answer": "{label} costs ${price}."}}}

    def train_rows(**caps):
        rows = build_rows(BuildSpec(tables=[table], wrappers=["{q}"], **caps), lambda p: tmp_path / p)
        facts: dict[str, set[str]] = {}
        for r in rows:
            if r.split == "train":
                facts.setdefault(r.row.meta["fact"], set()).add(r.row.meta["phrasing"])
        return facts

    # Four training phrasings of members are written (one of five is held out).
    capped = train_rows(train_phrasings=1, group_phrasings=3)
    assert {f: len(p) for f, p in capped.items() if f.startswith("group@")} == {"group@kettles:members": 3, "group@pans:members": 3}
    assert all(len(p) == 1 for f, p in capped.items() if f.startswith("price@"))
    assert len([f for f in capped if f.startswith("price@")]) == 4
    # Unset, groups follow train_phrasings.
    assert all(len(p) == 1 for p in train_rows(train_phrasings=1).values())
    # A question set's own ``phrasings`` wins over both caps, for that set only.
    group["members"]["phrasings"] = 4
    table["columns"]["price"]["phrasings"] = 2
    own = train_rows(train_phrasings=1, group_phrasings=3)
    assert {f: len(p) for f, p in own.items()} == {**{f: 4 for f in own if f.startswith("group@")},
                                                   **{f: 2 for f in own if f.startswith("price@")}}
    assert len(own) == 6


def test_holdout_by_fact_trains_every_pattern_and_never_a_facts_own_held_out_one(tmp_path):
    (tmp_path / "shop.csv").write_text(SHOP)
    questions = ["Price of {label}?", "Cost of {label}?", "{label} price?"]
    table = {"path": "shop.csv", "columns": {"price": {"questions": questions, "answer": "{label} costs ${price}."}}}

    def phrasings(holdout):
        rows = build_rows(BuildSpec(tables=[table], wrappers=["{q}"], holdout=holdout), lambda p: tmp_path / p)
        by_fact: dict[str, dict[str, set[str]]] = {}
        for r in rows:
            by_fact.setdefault(r.row.meta["fact"], {"train": set(), "eval": set()})[r.split].add(r.row.meta["phrasing"])
        return by_fact

    by_pattern = phrasings("pattern")
    assert len({p for f in by_pattern.values() for p in f["eval"]}) == 1  # one pattern held out for every row
    assert len({p for f in by_pattern.values() for p in f["train"]}) == 2
    by_fact = phrasings("fact")
    assert len(by_fact) == 4 and all(len(f["eval"]) == 1 and len(f["train"]) == 2 for f in by_fact.values())
    assert all(not (f["eval"] & f["train"]) for f in by_fact.values())
    assert {p for f in by_fact.values() for p in f["train"]} == set(questions)
    assert {p for f in by_fact.values() for p in f["eval"]} == set(questions)  # four rows, three patterns in turn
