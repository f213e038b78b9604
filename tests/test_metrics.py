import pytest

from tunewright.evaluate.metrics import get_metric, normalise_answer
from tunewright.evaluate.scoring import score_responses

from helpers import qa_rows


def test_normalisation_keeps_numbers_apart():
    assert normalise_answer("The tent weighs 2.1 kg!") == "tent weighs 2 1 kg"


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("The Ridgeback 2 Tent costs $189.", "$189", 1.0),
        ("It costs $1890.", "$189", 0.0),  # a number inside a longer number is not the fact
        ("It weighs 2.1 kg.", "2.1 kg", 1.0),
        ("It weighs 2 kg.", "2.1 kg", 0.0),
        ("", "$189", 0.0),
    ],
)
def test_contains(prediction, reference, expected):
    assert get_metric("contains").score(prediction, reference) == expected


def test_exact_match_ignores_case_punctuation_articles():
    metric = get_metric("exact_match")
    assert metric.score("The answer!", "answer") == 1.0
    assert metric.score("an answer here", "answer") == 0.0


def test_token_f1_partial_credit():
    f1 = get_metric("token_f1").score("costs 189 dollars", "189 dollars")
    assert f1 == pytest.approx(2 * (2 / 3) * 1.0 / (2 / 3 + 1.0))
    assert get_metric("token_f1").score("nothing alike", "189") == 0.0


def test_contains_checks_the_fact_and_exact_match_the_whole_answer():
    rows = qa_rows(2)  # answers "Item 0 costs $3." / "Item 1 costs $10.", references "$3" / "$10"
    per_example, means = score_responses(rows, ["It costs $3.", "Item 1 costs $10."], ["contains", "exact_match"])
    assert [e["contains"] for e in per_example] == [1.0, 1.0]
    assert [e["exact_match"] for e in per_example] == [0.0, 1.0]
    assert means == {"contains": 1.0, "exact_match": 0.5}
