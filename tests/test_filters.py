"""Filters flag with a reason (never delete), count what they caught, and see the accepted set."""

import pytest

from tunewright.data.schema import ChatRow
from tunewright.errors import TunewrightError
from tunewright.synth.filters import FILTERS, Candidate, FilterContext, run_filters


def _row(question, answer="An answer."):
    return ChatRow(messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}])


def _candidates(*pairs):
    return [Candidate(f"c{i}", _row(q, a)) for i, (q, a) in enumerate(pairs)]


LONG_Q = "How long do I have to return an unused tent that I bought from your store in Atlanta last month"


def test_exact_and_near_duplicates_are_flagged_with_their_twin():
    candidates = _candidates((LONG_Q, "45 days."), (LONG_Q, "45 days."), (LONG_Q + "?", "45 days."), ("Other question", "Yes."))
    counts = run_filters([FILTERS.get("exact-duplicates"), FILTERS.get("near-duplicates")], candidates, FilterContext())
    assert counts == {"exact-duplicates": 1, "near-duplicates": 1}
    assert [c.kept for c in candidates] == [True, False, False, True]
    assert candidates[1].flags[0].reason == "same as c0"
    assert "near duplicate" in candidates[2].flags[0].reason and "c0" in candidates[2].flags[0].reason
    assert len(candidates) == 4  # flagged, not deleted


def test_duplicates_of_the_accepted_set_count_too():
    candidates = _candidates((LONG_Q, "45 days."))
    run_filters([FILTERS.get("exact-duplicates")], candidates, FilterContext(accepted=[_row(LONG_Q, "45 days.")]))
    assert candidates[0].flags[0].reason == "same as an accepted row"


def test_decontamination_against_eval_text():
    eval_text = "What is the return window for footwear bought online from the store in Atlanta?"
    candidates = _candidates((eval_text, "60 days."), ("Tell me about tents and stoves for camping trips in the mountains", "Sure."))
    counts = run_filters([FILTERS.get("decontaminate")], candidates, FilterContext(protected_texts=[eval_text]))
    assert counts == {"decontaminate": 1} and not candidates[0].kept and candidates[1].kept
    assert "8-grams appear in eval/test data" in candidates[0].flags[0].reason


def test_length_limits():
    from tunewright.synth.filters.checks import Length

    candidates = _candidates(("q", "x" * 50), ("q", "ok"))
    run_filters([Length(min_answer_chars=1, max_answer_chars=10)], candidates, FilterContext())
    assert not candidates[0].kept and "longer than 10" in candidates[0].flags[0].reason and candidates[1].kept


def test_pii_flag_or_redact():
    from tunewright.synth.filters.checks import PersonalData

    flagged = _candidates(("My email is jane@example.com", "Thanks, noted."))
    run_filters([PersonalData(mode="flag")], flagged, FilterContext())
    assert flagged[0].flags[0].reason == "contains email"

    redacted = _candidates(("My email is jane@example.com", "Thanks, noted."))
    run_filters([PersonalData(mode="redact")], redacted, FilterContext())
    assert redacted[0].kept and redacted[0].question() == "My email is [EMAIL]"
    assert redacted[0].row.meta["redacted"] == ["email"]
    with pytest.raises(ValueError, match="flag' or 'redact"):
        PersonalData(mode="drop")


def test_later_filters_only_see_rows_still_kept():
    candidates = _candidates((LONG_Q, "a"), (LONG_Q, "a"))
    counts = run_filters([FILTERS.get("exact-duplicates"), FILTERS.get("exact-duplicates")], candidates, FilterContext())
    assert counts == {"exact-duplicates": 1} and len(candidates[1].flags) == 1


def test_built_in_filters_are_registered():
    assert {"exact-duplicates", "near-duplicates", "decontaminate", "length", "pii"} <= set(FILTERS.names())


def test_embeddings_put_paraphrases_close():
    from tunewright.models.embeddings import default_embedder

    vectors = default_embedder().encode(["How long do I have to return boots?", "What is the return window for boots?",
                                         "Which stove is the lightest?"])
    assert vectors.shape == (3, 384)
    assert float(vectors[0] @ vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.2


def test_semantic_duplicates_flag_paraphrases_only():
    candidates = _candidates(("How long do I have to return boots?", "60 days."),
                             ("How long have I got to return my boots?", "60 days."),
                             ("Which stove is the lightest?", "The Ember Camp Stove."))
    counts = run_filters([FILTERS.get_class("semantic-duplicates")(threshold=0.8)], candidates, FilterContext())
    assert counts == {"semantic-duplicates": 1}
    assert [c.kept for c in candidates] == [True, False, True]
    assert "with c0" in candidates[1].flags[0].reason


def test_novelty_drops_questions_too_close_to_accepted_or_earlier_ones():
    accepted = [_row("How long do I have to return boots?")]
    candidates = _candidates(("How long do I have to return my boots?", "a"), ("Which stove is the lightest one?", "b"),
                             ("Which stove is the lightest?", "c"))
    counts = run_filters([FILTERS.get("novelty")], candidates, FilterContext(accepted=accepted))
    assert counts == {"novelty": 2}
    assert [c.kept for c in candidates] == [False, True, False]
    assert "with an accepted row" in candidates[0].flags[0].reason and "with c1" in candidates[2].flags[0].reason


def test_filter_settings_are_typed_from_the_constructor_and_name_the_field():
    from tunewright.synth.filters import FILTERS

    settings = FILTERS.settings_for("length", {"max_answer_chars": "12"}, "synth.filters[0].settings")
    assert settings.max_answer_chars == 12 and settings.min_answer_chars == 1  # the constructor's defaults
    with pytest.raises(TunewrightError, match=r"field 'synth.filters\[0\].settings.max_answer_chars'"):
        FILTERS.settings_for("length", {"max_answer_chars": "long"}, "synth.filters[0].settings")
    with pytest.raises(TunewrightError, match=r"unknown setting for filter 'judge' \(its settings: rubric, "):
        FILTERS.settings_for("judge", {"teacher": "me", "rubric": "x"}, "synth.filters[1].settings")
    assert "teacher" not in FILTERS.get_class("judge").Settings.model_fields  # given by the round, not the recipe
