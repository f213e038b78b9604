"""Customer questions (`eval.questions`): reading, the leak check, answer matching, and the
evaluation that asks them of base and tuned on the tiny model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from helpers import chat_records, qa_rows, run_cli, write_jsonl
from tunewright.errors import TunewrightError
from tunewright.evaluate.matching import answer_matches, tokens
from tunewright.evaluate.questions import check_no_leak, conversations, load_questions, questions_for, shared_system_prompt

SHIPPED = Path(__file__).resolve().parents[1] / "examples" / "peachtree" / "customer-questions.jsonl"

# --- matching ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "accept", "expected"), [
    # plural "s" on a word, and whole words only
    ("It has a 2 years warranty.", ["2 year"], True),
    ("Sorry, we sell no kayaks.", ["no kayak"], True),
    ("We have no kayaks.", ["kayak"], True),
    ("A kayaking trip", ["kayak"], False),
    ("2 yearly checks", ["2 year"], False),
    # numbers are whole tokens, decimals and signs kept
    ("It takes 17 days.", ["7"], False),
    ("It takes 7 days.", ["7"], True),
    ("The fee is 10 days.", ["10%"], False),
    ("A 10% restocking fee.", ["10%"], True),
    ("A 10 percent fee.", ["10%"], True),
    ("A 10% fee.", ["10 percent"], True),
    ("It weighs 1.4 kg.", ["1.4 kg"], True),
    ("It weighs 1.40 kg.", ["1.4 kg"], True),
    ("It weighs 1 kg and 4 g.", ["1.4 kg"], False),
    ("It weighs 11.4 kg.", ["1.4 kg"], False),
    ("Shipping is $6.95.", ["6.95"], True),
    ("Shipping is 6.95 dollars.", ["$6.95"], False),
    ("Shipping is $6.", ["6.95"], False),
    ("It costs $349.00.", ["349"], True),
    ("It costs $1,299.", ["1299"], True),
    # apostrophes, straight and curly, on either side
    ("We don\u2019t sell kayaks.", ["don't sell"], True),
    ("We don't sell kayaks.", ["don\u2019t sell"], True),
    ("We do sell kayaks.", ["don't sell"], False),
    ("Sorry, Peachtree doesn't sell kayaks.", ["don't sell", "not sell"], True),  # negations spelled out
    ("Sorry, we cannot ship there.", ["can't ship"], True),
    ("We won't match it.", ["will not"], True),
    ("We do not sell kayaks.", ["do sell"], False),
    # product codes and e-mail addresses
    ("The code is PT-2210.", ["pt-2210"], True),
    ("The code is PT 2210", ["pt-2210"], True),
    ("The code is PT-22100.", ["pt-2210"], False),
    ("Write to help@peachtree-outfitters.example.", ["help@peachtree-outfitters.example"], True),
    ("Write to HELP@Peachtree-Outfitters.example", ["help@peachtree-outfitters.example"], True),
    ("Write to help@peachtree-outfitters.example.com", ["help@peachtree-outfitters.example"], False),
    ("Write to help@peachtree-outfitters.example", ["peachtree"], False),
    # case-insensitive, contiguous, any of several phrases
    ("It is the RIDGEBACK 2 tent.", ["ridgeback 2"], True),
    ("Ridgeback is 2 kg.", ["ridgeback 2"], False),
    ("Yes, within 60 days.", ["no", "60 days"], True),
    ("", ["yes"], False),
])
def test_answer_matching(answer, accept, expected):
    assert answer_matches(answer, accept) is expected


def test_tokens_treat_both_sides_alike():
    assert tokens("Costs $6.95, 10% off; weighs 1.4 kg (PT-2210).") == [
        "costs", "$", "6.95", "10", "percent", "off", "weighs", "1.4", "kg", "pt", "2210"]
    assert tokens("Don\u2019t") == tokens("don't") == ["do", "not"]
    assert tokens("help@peachtree-outfitters.example.") == ["help@peachtree-outfitters.example"]


def test_shipped_questions_load_and_no_question_answers_itself():
    questions = load_questions(SHIPPED)
    assert len(questions.questions) == 36
    groups = Counter(q.group for q in questions.questions)
    assert groups["price"] == 5 and groups["policy"] == 12 and sum(groups.values()) == 36
    # A question whose accepted answer is in its own words is passed by an echo; only the either-or
    # question may be (it names both backpacks), and only that one.
    echoed = [q.line for q in questions.questions if answer_matches(q.question, q.accept)]
    assert echoed == [20]


@pytest.mark.parametrize("example", ["peachtree", "lakeline"])
def test_each_example_workspace_gets_its_questions_and_trains_on_none_of_them(tmp_path, tiny_model_dir, example):
    from tunewright.synth.build import _without_questions
    from tunewright.synth.grounded import build_rows
    from tunewright.workspace import init_workspace

    shipped = SHIPPED.parents[1] / example / "customer-questions.jsonl"
    ws = init_workspace(tmp_path / "ws", base_model=str(tiny_model_dir), template=shipped.parent)
    questions = questions_for(ws)
    assert questions.path == ws.root / "customer-questions.jsonl" and questions.sha256 == load_questions(shipped).sha256
    assert len(questions.questions) == 36
    # The build leaves out a training row that asks a shipped question (lakeline, with every pattern
    # trained on some rows, writes question 22 word for word); no more than that one.
    rows, left_out = _without_questions(ws, build_rows(ws.recipe.build, ws.path))
    assert left_out is None or len(left_out["rows"]) <= 1
    check_no_leak(questions, [r.row for r in rows if r.split == "train"], dataset=f"{example}-qa")


# --- reading -----------------------------------------------------------------------------------

GOOD = '{"question": "Fine?", "accept": ["yes"]}\n'


@pytest.mark.parametrize(("content", "where"), [
    (GOOD + '{"question": "Q?", "accept": ["a"]\n', ":2: malformed JSON"),
    (GOOD + '{"accept": ["A"]}\n', ":2: field 'question': must be a non-empty string (got missing)"),
    (GOOD + '{"question": "  ", "accept": ["A"]}\n', ":2: field 'question': must be a non-empty string"),
    (GOOD + '{"question": "???", "accept": ["A"]}\n', ":2: field 'question': has no words"),
    (GOOD + '{"question": "Q?"}\n', ":2: field 'accept': must be a non-empty list of accepted answers (got missing)"),
    (GOOD + '{"question": "Q?", "accept": []}\n', ":2: field 'accept': must be a non-empty list"),
    (GOOD + '{"question": "Q?", "accept": "349"}\n', ":2: field 'accept': must be a non-empty list"),
    (GOOD + '{"question": "Q?", "accept": [""]}\n', ":2: field 'accept': every accepted answer must be a non-empty"),
    (GOOD + '{"question": "Q?", "accept": [349]}\n', ":2: field 'accept': every accepted answer must be a non-empty"),
    (GOOD + '{"question": "Q?", "accept": ["?!"]}\n', ":2: field 'accept': accepted answer '?!' has no word"),
    (GOOD + '{"question": "Q?", "accept": ["a"], "kind": 3}\n', ":2: field 'kind': must be a string"),
    (GOOD + '["question"]\n', ":2: expected a JSON object per line"),
    ("\n\n", ": file has no questions"),
])
def test_bad_questions_name_file_line_and_field(tmp_path, content, where):
    path = tmp_path / "questions.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TunewrightError) as info:
        load_questions(path)
    assert str(info.value).startswith(f"{path}{where}"), str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(TunewrightError, match=r"nope\.jsonl: field 'eval\.questions': questions file not found"):
        load_questions(tmp_path / "nope.jsonl", field="eval.questions")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(GOOD.encode() + b'{"question": "caf\xe9?", "accept": ["yes"]}\n')
    with pytest.raises(TunewrightError, match=r"latin1\.jsonl:2: not valid UTF-8"):
        load_questions(path)


def test_kind_defaults_to_other_groups_by_its_head_and_extra_fields_are_kept(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"question": "A?", "accept": ["a"]},
        {"question": "B?", "accept": ["b"], "kind": "price, with a story", "source": "inbox #12"},
        {"question": "C?", "accept": ["c"], "kind": "price"},
    ])
    a, b, c = load_questions(path).questions
    assert (a.kind, a.group) == ("other", "other")
    assert (b.kind, b.group, b.extra, b.line) == ("price, with a story", "price", {"source": "inbox #12"}, 2)
    assert c.group == "price"


def test_questions_are_asked_in_the_held_out_rows_shape(tmp_path):
    questions = load_questions(write_jsonl(tmp_path / "q.jsonl", [{"question": "A?", "accept": ["a"]}]))
    plain = qa_rows(3)
    assert shared_system_prompt(plain) is None
    assert conversations(questions, None) == [[{"role": "user", "content": "A?"}]]
    from tunewright.data.schema import ChatRow

    with_system = [ChatRow(messages=[{"role": "system", "content": "Be brief."}, *r.to_json()["messages"]])
                   for r in plain]
    assert shared_system_prompt(with_system) == "Be brief."
    assert shared_system_prompt(with_system + plain) is None  # rows disagree: no system prompt at all
    assert conversations(questions, "Be brief.")[0][0] == {"role": "system", "content": "Be brief."}


# --- the leak check ----------------------------------------------------------------------------

def test_leak_check_refuses_a_training_question_naming_its_line(tmp_path):
    train = qa_rows(5)  # "How much does item 3 cost?" is row 4
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"question": "How much does item 33 cost?", "accept": ["234"]},   # different number: fine
        {"question": "What do items 3 costs?", "accept": ["24"]},         # different words: fine
        {"question": "how much does ITEM 3 cost", "accept": ["24"]},      # the same after normalising
    ])
    with pytest.raises(TunewrightError) as info:
        check_no_leak(load_questions(path), train, dataset="shop@v1")
    message = str(info.value)
    assert message.startswith(f"{path}:3: field 'question': question is training row 4 of dataset 'shop@v1'")

    contained = write_jsonl(tmp_path / "c.jsonl", [{"question": "Does item 3 cost...", "accept": ["24"]}])
    with pytest.raises(TunewrightError, match=r"c\.jsonl:1: field 'question': question is contained in training row 4"):
        check_no_leak(load_questions(contained), train, dataset="shop@v1")
    partial_word = write_jsonl(tmp_path / "p.jsonl", [{"question": "em 3 co", "accept": ["24"]}])
    check_no_leak(load_questions(partial_word), train, dataset="shop@v1")  # whole words only


# --- inside `tunewright eval` ------------------------------------------------------------------

QUESTIONS = [
    {"question": "What does the tent cost?", "accept": ["189"], "kind": "price, with a story"},
    {"question": "tent price?", "accept": ["189"], "kind": "price"},
    {"question": "Warranty on the lantern?", "accept": ["2 year"], "kind": "warranty"},
    {"question": "Do you sell kayaks?", "accept": ["no kayak", "don't sell"]},
]
# What each model "says" (see `scripted`): base gets one question right, tuned three.
SCRIPT = {
    "base": {"What does the tent cost?": "It costs 18 dollars.", "tent price?": "$189",
             "Warranty on the lantern?": "One year.", "Do you sell kayaks?": "Yes!"},
    "tuned": {"What does the tent cost?": "The tent costs $189.", "tent price?": "$189.00",
              "Warranty on the lantern?": "It has a 2-year warranty.", "Do you sell kayaks?": "Yes, many."},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A workspace with a dataset and a tiny adapter (one step), its recipe naming questions.jsonl."""
    from tunewright.config import EvalSpec, Recipe, TrainSpec
    from tunewright.config.govern import ForgettingSpec, GovernSpec
    from tunewright.data.api import import_files
    from tunewright.train.api import train
    from tunewright.workspace import Workspace

    root = tmp_path_factory.mktemp("questions") / "ws"
    recipe = Recipe(name="shop", base_model=str(tiny_model_dir),
                    train=TrainSpec(r=4, alpha=8, batch_size=4, max_length=128, max_steps=1),
                    eval=EvalSpec(max_new_tokens=4, batch_size=4, questions="questions.jsonl"),
                    govern=GovernSpec(forgetting=ForgettingSpec(enabled=False)))
    ws = Workspace.init(root, recipe)
    data = write_jsonl(root / "rows.jsonl", chat_records(10))
    import_files(ws, [data], eval_fraction=0.2)
    train(ws)
    return root


@pytest.fixture
def scripted(monkeypatch):
    """Answers from SCRIPT instead of the tiny random model's noise, after the real generation has run
    (so the plumbing is real); records the conversations each model was asked."""
    from tunewright.models import generation

    real, asked = generation.generate_responses, []

    def answer(model, tokenizer, conversations, **kwargs):
        responses = real(model, tokenizer, conversations, **kwargs)
        if not all(c[-1]["content"] in SCRIPT["base"] for c in conversations):
            return responses  # the held-out rows, should they come this way
        side = ("base", "tuned")[len(asked)]
        asked.append([list(c) for c in conversations])
        return [SCRIPT[side][c[-1]["content"]] for c in conversations]

    monkeypatch.setattr(generation, "generate_responses", answer)
    return asked


def _evaluations(root):
    from tunewright.workspace import Workspace

    return Workspace.open(root).registry.list_evaluations()


def _independent_tally(rows: list[dict], side: str) -> dict:
    """Count from the per-question rows: re-match each answer, group by the kind's head."""
    by_kind: dict[str, list[int]] = {}
    for row in rows:
        kind = row["kind"].split(",")[0].strip()
        ok = answer_matches(row[f"{side}_answer"], row["accept"])
        assert ok is row[f"{side}_ok"]
        by_kind.setdefault(kind, [0, 0])
        by_kind[kind][0] += ok
        by_kind[kind][1] += 1
    return {kind: {"correct": c, "n": n, "accuracy": c / n} for kind, (c, n) in by_kind.items()}


def test_eval_asks_both_models_and_stores_per_kind_numbers_on_both_rows(trained, scripted, capsys):
    write_jsonl(trained / "questions.jsonl", QUESTIONS)
    code, out, err = run_cli(["-w", trained, "eval", "--limit", "2"], capsys)
    assert code == 0, err
    # One user turn per question (the held-out rows have no system prompt), base then tuned.
    assert len(scripted) == 2 and scripted[0] == scripted[1]
    assert scripted[0] == [[{"role": "user", "content": q["question"]}] for q in QUESTIONS]

    report = json.loads((trained / "reports" / "shop" / "report.json").read_text())
    asked = report["questions"]
    assert [r["question"] for r in asked["rows"]] == [q["question"] for q in QUESTIONS]
    assert [(r["base_ok"], r["tuned_ok"]) for r in asked["rows"]] == [(False, True), (True, True), (False, True),
                                                                        (False, False)]
    assert set(report["after"]["metrics"]) == {"exact_match", "contains", "token_f1"}  # task metrics stay flat

    base, tuned = _evaluations(trained)[-2:]
    assert base.adapter_id is None and tuned.adapter_id is not None
    for record, side in ((base, "base"), (tuned, "tuned")):
        stored = record.metrics["questions"]
        expected = _independent_tally(asked["rows"], side)
        assert stored["by_kind"] == expected
        assert stored["correct"] == sum(k["correct"] for k in expected.values())
        assert stored["n"] == len(QUESTIONS) and stored["accuracy"] == stored["correct"] / len(QUESTIONS)
        assert stored["file"] == "questions.jsonl" and len(stored["sha256"]) == 64
    assert base.metrics["questions"]["by_kind"]["price"] == {"correct": 1, "n": 2, "accuracy": 0.5}
    assert tuned.metrics["questions"]["by_kind"]["price"] == {"correct": 2, "n": 2, "accuracy": 1.0}
    assert list(tuned.metrics["questions"]["by_kind"]) == ["price", "warranty", "other"]

    text = " ".join(out.split())
    assert "customer questions (questions.jsonl, 4 questions)" in text
    assert "price │ 50.0% (1/2) │ 100.0% (2/2) │ +1" in text
    assert "all │ 25.0% (1/4) │ 75.0% (3/4) │ +2" in text
    html = (trained / "reports" / "shop" / "report.html").read_text()
    assert "<h2>Customer questions</h2>" in html and "It has a 2-year warranty." in html
    assert "no kayak / don&#39;t sell" in html


def test_real_generation_scores_consistently(trained, capsys):
    """No script: whatever the tiny model says, the stored numbers are the rows' own count."""
    write_jsonl(trained / "questions.jsonl", QUESTIONS)
    code, _, err = run_cli(["-w", trained, "eval", "--limit", "1", "--show", "0"], capsys)
    assert code == 0, err
    rows = json.loads((trained / "reports" / "shop" / "report.json").read_text())["questions"]["rows"]
    base, tuned = _evaluations(trained)[-2:]
    assert base.metrics["questions"]["by_kind"] == _independent_tally(rows, "base")
    assert tuned.metrics["questions"]["by_kind"] == _independent_tally(rows, "tuned")


def test_questions_option_overrides_the_recipe(trained, scripted, tmp_path, capsys):
    write_jsonl(trained / "questions.jsonl", [{"question": "broken"}])  # the recipe's file would fail
    other = write_jsonl(tmp_path / "other.jsonl", QUESTIONS[:2])
    code, out, err = run_cli(["-w", trained, "eval", "--limit", "1", "--questions", other, "--show", "0"], capsys)
    assert code == 0, err
    tuned = _evaluations(trained)[-1]
    assert tuned.metrics["questions"]["file"] == "other.jsonl" and tuned.metrics["questions"]["n"] == 2
    assert "customer questions (other.jsonl, 2 questions)" in " ".join(out.split())


@pytest.mark.parametrize(("content", "where"), [
    (None, ": questions file not found"),
    (b'{"question": "Q?", "accept": ["a"]}\n{"question": "R?", "accept": []}\n', ":2: field 'accept'"),
    (b'{"question": "Q?", "accept": ["a"]}\n{"question": "", "accept": ["a"]}\n', ":2: field 'question'"),
    (b'{"question": "Q?", "accept": ["a"]}\n{"question": "R?", "accept": ["a"]\n', ":2: malformed JSON"),
    (b'{"question": "caf\xe9?", "accept": ["a"]}\n', ":1: not valid UTF-8"),
    (b"", ": file has no questions"),
])
def test_a_bad_questions_file_exits_2_before_any_evaluation(trained, tmp_path, capsys, content, where):
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_bytes(content)
    before = len(_evaluations(trained))
    code, out, err = run_cli(["-w", trained, "eval", "--questions", path], capsys)
    assert code == 2 and f"{path}{where}" in " ".join(err.split()), err
    assert len(_evaluations(trained)) == before


def test_the_recipe_file_is_checked_too_and_named_by_its_field(trained, capsys):
    (trained / "questions.jsonl").unlink(missing_ok=True)
    code, _, err = run_cli(["-w", trained, "eval"], capsys)
    assert code == 2 and "questions.jsonl: field 'eval.questions': questions file not found" in " ".join(err.split())


def test_eval_refuses_questions_from_the_training_split(trained, capsys):
    from tunewright.data.api import load_split
    from tunewright.workspace import Workspace

    record, train_rows = load_split(Workspace.open(trained), None, "train")
    _, eval_rows = load_split(Workspace.open(trained), None, "eval")
    planted = train_rows[2].messages[0].content
    write_jsonl(trained / "questions.jsonl", [{"question": eval_rows[0].messages[0].content, "accept": ["x"]},
                                              {"question": planted.upper(), "accept": ["x"]}])
    before = len(_evaluations(trained))
    code, _, err = run_cli(["-w", trained, "eval"], capsys)
    err = " ".join(err.split())
    assert code == 2 and f"questions.jsonl:2: field 'question': question is training row 3 of dataset " \
                         f"'{record.name}@{record.version}'" in err, err
    assert len(_evaluations(trained)) == before
