import pytest
from review_helpers import BagOfWords, add_round
from tunewright.errors import TunewrightError
from tunewright.review.corrections import apply_correction, derive_replacements, preview_correction
from tunewright.review.dataset import reviewed_rows
from tunewright.synth.feedback import build_guidance, cluster_reject_reasons, guidance_from_json, guidance_to_json


def test_reject_reasons_cluster_by_reason_and_note(store):
    add_round(store, [(f"q{i}?", f"a{i}.") for i in range(5)])
    items = store.candidates("support")
    notes = ["too long, trim the preamble", "too long preamble again", "", "wrong price", "wrong price"]
    reasons = [["style"], ["style"], ["style"], ["wrong"], ["wrong"]]
    for item, note, reason in zip(items, notes, reasons):
        store.review(item.id, reviewer="ann", decision="reject", reasons=reason, note=note)
    clusters = cluster_reject_reasons(store.reviews("support"), embedder=BagOfWords(), threshold=0.3)
    rendered = [c.render() for c in clusters]
    assert any(r.startswith("style (2 rows): too long") for r in rendered)
    assert any(r.startswith("wrong (2 rows): wrong price") for r in rendered)
    assert "style (1 row)" in rendered  # the rejection without a note still counts


def test_guidance_holds_notes_corrections_and_exemplars(store):
    add_round(store, [("Return window?", "As an AI, I think 30 days."), ("Shipping cost?", "Free over $50."),
                      ("Gift cards?", "They never expire.")])
    a, b, c = store.candidates("support")
    store.review(a.id, reviewer="ann", decision="accept", rating=3,
                 edited=[a.messages[0], {"role": "assistant", "content": "30 days."}])
    store.review(b.id, reviewer="ann", decision="accept", rating=5)
    store.review(c.id, reviewer="ann", decision="reject", reasons=["style"], note="drop the AI preamble")
    guidance = build_guidance(store, "support")
    assert guidance.notes == ["style (1 row): drop the AI preamble"]
    assert [(x.wrong, x.corrected) for x in guidance.corrections] == [("As an AI, I think 30 days.", "30 days.")]
    assert [row.answer for row in guidance.exemplars] == ["Free over $50."]
    text = guidance.render()
    assert "drop the AI preamble" in text and "Corrected: 30 days." in text and "Free over $50." in text
    assert guidance_from_json(guidance_to_json(guidance)) == guidance


def test_empty_review_gives_empty_guidance(store):
    add_round(store, [("q?", "a.")])
    guidance = build_guidance(store, "support")
    assert guidance.is_empty() and guidance.render() == ""


def test_replacements_from_an_edit():
    reps = derive_replacements("Returns within 30 days of purchase.", "Returns within 45 days of purchase.")
    assert [(r.old, r.new) for r in reps] == [("30", "45")]


def test_correction_preview_then_apply_only_to_similar_rows(store):
    add_round(store, [
        ("How long do I have to return shoes?", "You can return shoes within 30 days."),
        ("How long do I have to return boots?", "You can return boots within 30 days."),
        ("How long do I have to return socks?", "You can return socks within 30 days."),
        ("What is the capital of France?", "Paris is 30 days away."),
        ("How long do I have to return hats?", "Hats cannot be returned."),
    ])
    items = store.candidates("support")
    source = items[0]
    store.review(source.id, reviewer="ann", decision="accept",
                 edited=[source.messages[0], {"role": "assistant", "content": "You can return shoes within 45 days."}])
    preview = preview_correction(store, source.id, embedder=BagOfWords(), min_similarity=0.5)
    assert sorted(p.candidate_id for p in preview) == [items[1].id, items[2].id]
    assert all("45 days" in p.after for p in preview)
    assert store.get(items[1].id).answer.endswith("30 days.")  # a preview changes nothing
    assert apply_correction(store, source.id, preview, reviewer="ann") == 2
    assert store.get(items[1].id).answer == "You can return boots within 45 days."
    assert store.get(items[1].id).status == "pending"  # still needs a person's decision
    assert [e.action for e in store.registry.events()[-2:]] == ["review.correction_applied"] * 2


def test_stale_preview_is_refused(store):
    add_round(store, [("Return shoes?", "Within 30 days."), ("Return boots?", "Within 30 days!")])
    a, b = store.candidates("support")
    store.review(a.id, reviewer="ann", decision="accept", edited=[a.messages[0], {"role": "assistant", "content": "Within 45 days."}])
    preview = preview_correction(store, a.id, embedder=BagOfWords(), min_similarity=0.0)
    store.review(b.id, reviewer="bob", decision="reject")
    with pytest.raises(TunewrightError):
        apply_correction(store, a.id, preview, reviewer="ann")


def test_correction_needs_an_edit(store):
    add_round(store, [("q?", "a.")])
    item = store.candidates("support")[0]
    with pytest.raises(TunewrightError, match="no edit"):
        preview_correction(store, item.id, embedder=BagOfWords())


def test_only_accepted_rows_and_auto_accepted_scores_enter_a_dataset(store):
    add_round(store, [("q1?", "a1."), ("q2?", "a2."), ("q3?", "a3."), ("q4?", "a4.")], scores={2: 5, 3: 5})
    c1, c2, c3, c4 = store.candidates("support")
    store.review(c1.id, reviewer="ann", decision="accept")
    store.review(c2.id, reviewer="ann", decision="reject")
    store.review(c4.id, reviewer="ann", decision="reject")  # a person overrules the judge
    rows, record = reviewed_rows(store, "support")
    assert [r.answer for r in rows] == ["a1."]
    assert record["review_ids"] == [store.reviews(candidate_id=c1.id)[0].id]
    rows, record = reviewed_rows(store, "support", auto_accept_score=4)
    assert [r.answer for r in rows] == ["a1.", "a3."]
    assert record["auto_accepted"] == [{"candidate_id": c3.id, "judge_score": 5}]
