"""The one answer matcher (`evaluate/matching.py`) behind customer questions and retention probes:
what each caller took from the other, and where the two used to disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunewright.errors import TunewrightError
from tunewright.evaluate.forgetting import RetentionProbe, load_retention_probes, score_retention
from tunewright.evaluate.matching import answer_matches, tokens
from tunewright.evaluate.questions import CustomerQuestion, QuestionFile, score_questions


@pytest.mark.parametrize(("answer", "accept", "expected"), [
    # Customer questions take numbers in words from the retention probes, inside phrases too.
    ("It has a two-year warranty.", ["2 year"], True),
    ("Returns within fourteen days.", ["14 days"], True),
    ("It costs fifty-nine dollars.", ["59"], True),
    ("A one hundred and twenty litre bag.", ["120"], True),
    ("Between one hundred and two hundred.", ["100"], True),
    ("Between one hundred and two hundred.", ["102"], False),
    ("It takes seventeen days.", ["7"], False),
    # The old probe rule offered "seven" for "7" and found it inside these.
    ("twenty-seven", ["7"], False),
    ("seven hundred", ["7"], False),
    ("two hundred dollars", ["2"], False),
    ("zero", ["0"], True),
    ("The 2 o'clock slot", ["two"], True),
])
def test_numbers_in_words_count_as_their_digits(answer, accept, expected):
    assert answer_matches(answer, accept) is expected


@pytest.mark.parametrize(("answer", "accept", "expected"), [
    # Retention probes take the plural "s", curly apostrophes, decimals and signs from customer questions.
    ("There are two lions.", ["lion"], True),
    ("Shakespeare\u2019s plays", ["Shakespeare"], True),
    ("Spiders have 8.5 legs.", ["8"], False),  # the old rule split "8.5" into "8" and "5"
    ("It is 1.4 kg.", ["1"], False),
    ("It can\u2019t fly.", ["cannot fly"], True),
    ("It doesn't sell.", ["not sell"], True),
    ("about 1,000th of it", ["1000th"], True),
    ("co 2", ["CO2"], True),
    # An "s" after a subject that never takes a plural noun is a verb's.
    ("A person who cooks.", ["cook"], False),
    ("She cooks.", ["cook"], False),
    ("We have two cooks.", ["cook"], True),
    ("Which kayaks do you sell?", ["kayak"], True),
    # Articles are words: the old probe rule dropped them, so "vitamin a" was found in "vitamin c".
    ("It is vitamin C.", ["vitamin A"], False),
    ("It is vitamin A.", ["vitamin A"], True),
    ("Due on the 21st.", ["the 21"], True),
    ("It costs $21.", ["the 21"], False),
    ("It is the Pacific Ocean.", ["Pacific"], True),
])
def test_what_the_probes_take_from_the_customer_questions(answer, accept, expected):
    assert answer_matches(answer, accept) is expected


def test_tokens_spell_numbers_as_digits_on_both_sides():
    assert tokens("Twenty-one, ninety nine and nine hundred ninety-nine") == ["21", "99", "and", "999"]
    assert tokens("one two three") == ["1", "2", "3"]
    assert tokens("a hundred") == ["a", "hundred"]  # "a hundred" was never a number to either rule


def test_retention_and_questions_score_with_the_same_rule():
    probes = [RetentionProbe("p1", "Big cats?", ("lion",)), RetentionProbe("p2", "Legs on an insect?", ("6",))]
    result = score_retention(probes, ["Two lions.", "six"], ["lions", "6.5"])
    assert (result["n_base_correct"], result["n_tuned_kept"]) == (2, 1)
    assert [lost["id"] for lost in result["lost"]] == ["p2"]

    questions = QuestionFile(Path("q.jsonl"), "0" * 64, (CustomerQuestion(1, "Warranty?", ("2 year",)),))
    scored = score_questions(questions, ["Two years."], ["A twelve-month warranty."])
    assert (scored["base"]["correct"], scored["tuned"]["correct"]) == (1, 0)


@pytest.mark.parametrize("alias", ["the", "A", "an the", "?"])
def test_a_probe_alias_of_articles_alone_is_refused(tmp_path, alias):
    path = tmp_path / "probes.jsonl"
    path.write_text(f'{{"id": "x", "question": "Q?", "answers": ["{alias}"]}}\n')
    with pytest.raises(TunewrightError, match="at least one word besides an article"):
        load_retention_probes(path)
