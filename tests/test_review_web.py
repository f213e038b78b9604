"""The review web UI through FastAPI's TestClient: log-in, CSRF, decisions, blind review, filters."""

from __future__ import annotations

import os
import re
import stat

import pytest
from fastapi.testclient import TestClient

from tunewright.config.synth import ReviewSpec
from tunewright.data.schema import ChatRow
from tunewright.registry import Registry
from tunewright.review import NewCandidate, ReviewStore, add_reviewer
from tunewright.review.web import create_app

PASSWORD = "correct horse"
SECRET = "s" * 40
GUIDELINES = "Accept only answers grounded in the catalogue."


def _row(question: str, answer: str, score: int | None) -> ChatRow:
    return ChatRow(messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                   meta={"judge": {"score": score}} if score is not None else {})


def seed_queue(store: ReviewStore, queue: str = "faq") -> dict[str, int]:
    """Two rounds of varied rows; returns their ids by a short name."""
    first = [
        ("tent-price", "How much is the Ridgeback tent?", "It costs $189.", 5, "tents", "self-instruct", []),
        ("tent-vague", "Is the Ridgeback tent good?", "It is a tent.", 2, "tents", "evol-instruct",
         [{"filter": "judge", "reason": "score 2 < 4: vague answer"}]),
        ("lamp-warranty", "What warranty does the Aurora lamp have?", "A two-year warranty.", 4, "lamps",
         "grounded-chunks", []),
    ]
    second = [
        ("lamp-long", "How bright is the Aurora lamp?", "It gives 300 lumens.", 3, "lamps", "self-instruct",
         [{"filter": "length", "reason": "answer shorter than 30 characters"}]),
        ("stove-fuel", "What fuel does the Ember stove use?", "Isobutane canisters.", 4, "stoves", "self-instruct", []),
    ]
    ids: dict[str, int] = {}
    for number, rows in enumerate((first, second), start=1):
        record = store.open_round(queue, spec_sha256="spec", teacher_model="teacher-7b", guidance={})
        new = []
        for name, question, answer, score, topic, generator, flags in rows:
            provenance = {"generator": generator, "teacher_model": "teacher-7b", "round": number, "topic": topic,
                          "params": {"temperature": 0.7}}
            if generator == "grounded-chunks":
                provenance["source_chunk"] = {"source": "catalogue.md", "sha256": "abc",
                                              "text": "The Aurora lamp carries a two-year warranty."}
            new.append(NewCandidate(_row(question, answer, score), provenance, flags))
        store.finish_round(record.id, new, usage={}, filter_counts={}, failures=[], n_generated=len(new))
    by_question = {c.question: c.id for c in store.candidates(queue)}
    for rows in (first, second):
        for name, question, *_ in rows:
            ids[name] = by_question[question]
    return ids


@pytest.fixture
def registry(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    for name in ("ann", "bob"):
        add_reviewer(registry, name, PASSWORD)
    yield registry
    registry.close()


@pytest.fixture
def store(registry):
    return ReviewStore(registry)


@pytest.fixture
def ids(store):
    return seed_queue(store)


def client_for(registry, spec: ReviewSpec | None = None) -> TestClient:
    spec = spec or ReviewSpec(guidelines=GUIDELINES)
    return TestClient(create_app(registry, spec, secret_key=SECRET, queue_default="faq"))


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": name, "password": password, "csrf": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)


def decide(client: TestClient, token: str, item: int, **body):
    return client.post(f"/q/faq/items/{item}/decision", json=body, headers={"X-CSRF-Token": token})


def row_ids(html: str) -> set[int]:
    return {int(i) for i in re.findall(r'<tr data-id="(\d+)">', html)}


def shown_item(html: str) -> int:
    return int(re.search(r'class="item-id">#(\d+)<', html).group(1))


# -- log-in and CSRF -----------------------------------------------------------------------------


def test_every_page_needs_log_in_and_login_returns_to_the_page(registry, store, ids):
    client = client_for(registry)
    for path in ("/", "/q/faq", "/q/faq/review", f"/q/faq/items/{ids['tent-price']}", "/stats"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path
    token = csrf_of(client.get("/login").text)
    assert decide(client, token, ids["tent-price"], decision="accept").status_code == 401
    assert store.reviews() == []

    response = client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": token,
                                           "next": "/q/faq?topic=lamps"}, follow_redirects=False)
    assert response.headers["location"] == "/q/faq?topic=lamps"
    assert "signed in as <strong class=\"who\">ann</strong>" in client.get("/").text


def test_wrong_password_is_401_with_a_clear_message_and_no_session(registry, ids):
    client = client_for(registry)
    token = csrf_of(client.get("/login").text)
    for name, password in (("ann", "not the password"), ("nobody", PASSWORD)):
        response = client.post("/login", data={"name": name, "password": password, "csrf": token})
        assert response.status_code == 401
        assert "Wrong name or password" in response.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_log_in_never_redirects_off_site(registry, ids):
    client = client_for(registry)
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": token,
                                           "next": "//evil.example/steal"}, follow_redirects=False)
    assert response.headers["location"] == "/q/faq"


def test_posts_without_the_csrf_token_are_refused(registry, store, ids):
    client = client_for(registry)
    assert client.post("/login", data={"name": "ann", "password": PASSWORD}).status_code == 403
    token = login(client, "ann")
    item = ids["tent-price"]
    assert client.post(f"/q/faq/items/{item}/decision", json={"decision": "accept"}).status_code == 403
    assert decide(client, "forged" + token, item, decision="accept").status_code == 403
    assert client.post(f"/q/faq/items/{item}/decision", data={"decision": "accept"}).status_code == 403
    assert client.post("/q/faq/bulk", data={"decision": "accept", "expected": "5"}).status_code == 403
    assert client.post("/logout").status_code == 403
    assert store.reviews() == []
    assert store.get(item).status == "pending"


def test_log_out_ends_the_session(registry, ids):
    client = client_for(registry)
    token = login(client, "ann")
    assert client.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_new_app_with_the_same_secret_keeps_the_log_in(registry, ids):
    first = client_for(registry)
    login(first, "ann")
    second = client_for(registry)
    second.cookies.update(first.cookies)
    assert second.get("/", follow_redirects=False).status_code == 200


def test_everything_is_served_locally_under_a_strict_policy(registry, ids):
    client = client_for(registry)
    login(client, "ann")
    for path in ("/static/review.js", "/static/review.css"):
        assert client.get(path).status_code == 200
    page = client.get(f"/q/faq/items/{ids['tent-price']}")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert not re.search(r'(src|href)="(https?:)?//', page.text)


# -- decisions -----------------------------------------------------------------------------------


def test_accept_reject_and_edit_are_recorded_by_the_store(registry, store, ids):
    client = client_for(registry)
    token = login(client, "ann")
    accepted = decide(client, token, ids["tent-price"], decision="accept", rating=4, seconds=12.5)
    assert accepted.status_code == 200 and accepted.json()["next"] == "/q/faq/review"

    # The no-JavaScript form path: repeated reasons, turns as turn-N fields with browser CRLF line ends.
    rejected = client.post(f"/q/faq/items/{ids['tent-vague']}/decision",
                           data={"csrf": token, "decision": "reject", "reasons": ["wrong", "style"],
                                 "note": "says nothing", "turn-0": "Is the Ridgeback tent good?",
                                 "turn-1": "It is\r\na tent.", "seconds": "3"}, follow_redirects=False)
    assert rejected.status_code == 303

    edited = decide(client, token, ids["lamp-warranty"], decision="accept",
                    turns=["What warranty does the Aurora lamp have?", "A two-year warranty\non parts."])
    assert edited.status_code == 200 and edited.json()["edited"] is True

    reviews = {r.candidate_id: r for r in store.reviews("faq")}
    assert len(reviews) == 3
    first = reviews[ids["tent-price"]]
    assert (first.reviewer, first.decision, first.rating, first.seconds, first.after) == \
        ("ann", "accept", 4, 12.5, None)
    second = reviews[ids["tent-vague"]]
    assert (second.decision, second.reasons, second.note, second.seconds) == \
        ("reject", ["wrong", "style"], "says nothing", 3.0)
    assert second.after[-1]["content"] == "It is\na tent."
    third = reviews[ids["lamp-warranty"]]
    assert third.after[-1] == {"role": "assistant", "content": "A two-year warranty\non parts."}
    assert third.before[-1]["content"] == "A two-year warranty."
    assert store.get(ids["tent-price"]).status == "accepted"
    assert store.get(ids["tent-vague"]).status == "rejected"
    assert store.get(ids["lamp-warranty"]).answer == "A two-year warranty\non parts."


def test_an_empty_turn_is_400_with_the_store_message_and_nothing_is_saved(registry, store, ids):
    client = client_for(registry)
    token = login(client, "ann")
    item = ids["tent-price"]
    response = decide(client, token, item, decision="accept", turns=["How much is the Ridgeback tent?", "   "])
    assert response.status_code == 400
    assert "must not be empty" in response.json()["error"]
    page = client.post(f"/q/faq/items/{item}/decision",
                       data={"csrf": token, "decision": "accept", "turn-0": "", "turn-1": "It costs $189."})
    assert page.status_code == 400 and "must not be empty" in page.text
    assert decide(client, token, item, decision="reject", reasons=["made up"]).status_code == 400
    assert decide(client, token, item, decision="accept", turns=["only one turn"]).status_code == 400
    assert store.reviews() == []
    assert store.get(item).status == "pending"


def test_previous_shows_your_decision_and_changing_it_appends_a_review(registry, store, ids):
    client = client_for(registry)
    token = login(client, "ann")
    first = shown_item(client.get("/q/faq/review").text)
    assert first == ids["tent-price"]
    decide(client, token, first, decision="accept", rating=5)
    page = client.get("/q/faq/review").text
    assert shown_item(page) == ids["tent-vague"]
    prev = re.search(r'href="([^"]+)" data-nav="prev"', page).group(1)
    assert prev == f"/q/faq/items/{first}"
    back = client.get(prev).text
    assert "You <strong>accepted</strong>" in back and "rating 5" in back
    assert decide(client, token, first, decision="reject", reasons=["wrong"]).status_code == 200
    assert [r.decision for r in store.reviews(candidate_id=first)] == ["accept", "reject"]
    assert store.get(first).status == "rejected"


def test_the_item_page_shows_the_evidence_a_reviewer_needs(registry, ids):
    client = client_for(registry)
    login(client, "ann")
    vague = client.get(f"/q/faq/items/{ids['tent-vague']}").text
    assert GUIDELINES in vague
    assert "score 2 &lt; 4: vague answer" in vague
    assert 'class="judge-score">2<' in vague
    assert "teacher-7b" in vague and "evol-instruct" in vague
    for reason in ReviewSpec().reject_reasons:
        assert f'value="{reason}"' in vague
    grounded = client.get(f"/q/faq/items/{ids['lamp-warranty']}").text
    assert "The Aurora lamp carries a two-year warranty." in grounded and "catalogue.md" in grounded


def test_content_is_escaped(registry, store):
    record = store.open_round("faq", spec_sha256="s", teacher_model="t", guidance={})
    store.finish_round(record.id, [NewCandidate(_row("<script>alert(1)</script>?", "<b>bold</b>", None), {})],
                       usage={}, filter_counts={}, failures=[], n_generated=1)
    client = client_for(registry)
    login(client, "ann")
    assert "<script>alert(1)" not in client.get("/q/faq").text
    page = client.get("/q/faq/review").text
    assert "<script>alert(1)" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


def test_preview_marks_word_insertions_and_deletions(registry, ids):
    client = client_for(registry)
    token = login(client, "ann")
    response = client.post(f"/q/faq/items/{ids['tent-price']}/preview",
                           json={"turns": ["How much is the Ridgeback tent?", "It costs <$199> now."]},
                           headers={"X-CSRF-Token": token})
    diffs = response.json()["diffs"]
    assert diffs[0] is None  # unchanged turn
    # Word-level, and the typed text is escaped: only <ins>/<del> are markup.
    assert diffs[1] == "It costs <ins>&lt;</ins>$<del>189</del><ins>199&gt; now</ins>."


# -- blind review, assignment, bulk ----------------------------------------------------------------


def test_blind_review_hides_other_reviewers_decisions(registry, store, ids):
    spec = ReviewSpec(min_reviews=2, reviewers_per_item=2, guidelines=GUIDELINES)
    ann, bob = client_for(registry, spec), client_for(registry, spec)
    ann_token, bob_token = login(ann, "ann"), login(bob, "bob")
    item = ids["tent-price"]
    assert decide(ann, ann_token, item, decision="reject", reasons=["off topic"], note="ANN-SECRET-NOTE",
                  turns=["How much is the Ridgeback tent?", "ANN-EDIT-MARKER"]).status_code == 200
    assert store.get(item).status == "pending"  # one review of the two needed

    for page in (bob.get(f"/q/faq/items/{item}").text, bob.get("/q/faq/review").text, bob.get("/q/faq").text):
        assert "ANN-SECRET-NOTE" not in page and "ANN-EDIT-MARKER" not in page
        assert "your-decision" not in page and "you rejected" not in page and " checked" not in page
    assert shown_item(bob.get("/q/faq/review").text) == item  # still on bob's list

    assert decide(bob, bob_token, item, decision="accept", note="BOB-NOTE").status_code == 200
    ann_page = ann.get(f"/q/faq/items/{item}").text
    assert "ANN-SECRET-NOTE" in ann_page and "BOB-NOTE" not in ann_page
    assert "You <strong>rejected</strong>" in ann_page
    assert store.get(item).status == "rejected"  # a tie rejects


def _walk(client: TestClient, token: str) -> list[int]:
    seen = []
    while True:
        page = client.get("/q/faq/review").text
        if "Nothing left for you" in page:
            return seen
        item = shown_item(page)
        seen.append(item)
        assert decide(client, token, item, decision="accept").status_code == 200


def test_assigned_reviewers_see_and_decide_only_their_own_items(registry, store, ids):
    store.assign("faq", ["ann", "bob"], per_item=1)
    mine = {name: {c.id for c in store.todo("faq", name)} for name in ("ann", "bob")}
    assert mine["ann"] and mine["bob"] and not mine["ann"] & mine["bob"]
    assert mine["ann"] | mine["bob"] == set(ids.values())

    ann, bob = client_for(registry), client_for(registry)
    ann_token, bob_token = login(ann, "ann"), login(bob, "bob")
    bobs_item = min(mine["bob"])
    refused = decide(ann, ann_token, bobs_item, decision="accept")
    assert refused.status_code == 403 and "assigned to other reviewers" in refused.json()["error"]
    assert "not decide it" in ann.get(f"/q/faq/items/{bobs_item}").text
    assert f"Start reviewing ({len(mine['ann'])})" in ann.get("/q/faq").text

    # Bulk acts on the reviewer's own items only, never on someone else's assignment.
    confirm = ann.get("/q/faq/bulk?decision=accept").text
    assert f'class="bulk-count">{len(mine["ann"])}<' in confirm
    assert ann.post("/q/faq/bulk", data={"csrf": ann_token, "decision": "accept",
                                        "expected": str(len(mine["ann"]))}).status_code == 200
    assert {r.candidate_id for r in store.reviews(reviewer="ann")} == mine["ann"]
    assert sorted(_walk(bob, bob_token)) == sorted(mine["bob"])
    assert {r.candidate_id for r in store.reviews(reviewer="bob")} == mine["bob"]


def test_bulk_accept_touches_exactly_the_filtered_items(registry, store, ids):
    client = client_for(registry)
    token = login(client, "ann")
    lamps = {ids["lamp-warranty"], ids["lamp-long"]}
    confirm = client.get("/q/faq/bulk?decision=accept&topic=lamps").text
    assert 'class="bulk-count">2<' in confirm and 'name="topic" value="lamps"' in confirm

    stale = client.post("/q/faq/bulk", data={"csrf": token, "decision": "accept", "topic": "lamps", "expected": "3"})
    assert stale.status_code == 409 and store.reviews() == []

    done = client.post("/q/faq/bulk", data={"csrf": token, "decision": "accept", "topic": "lamps", "expected": "2"},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/q/faq?topic=lamps"
    reviews = store.reviews("faq")
    assert {r.candidate_id for r in reviews} == lamps
    assert all(r.reviewer == "ann" and r.decision == "accept" for r in reviews)
    assert {c.id for c in store.candidates("faq") if c.status == "accepted"} == lamps
    assert "Accepted 2 items." in client.get(done.headers["location"]).text


def test_bulk_reject_records_reasons(registry, store, ids):
    client = client_for(registry)
    token = login(client, "ann")
    client.post("/q/faq/bulk", data={"csrf": token, "decision": "reject", "flag": "judge", "expected": "1",
                                     "reasons": ["wrong"], "note": "judge was right"})
    [review] = store.reviews("faq")
    assert (review.candidate_id, review.decision, review.reasons, review.note) == \
        (ids["tent-vague"], "reject", ["wrong"], "judge was right")


# -- the queue list --------------------------------------------------------------------------------


def test_filters_narrow_the_list(registry, ids):
    client = client_for(registry)
    login(client, "ann")
    assert row_ids(client.get("/q/faq").text) == set(ids.values())
    cases = {
        "topic=lamps": {ids["lamp-warranty"], ids["lamp-long"]},
        "min_score=4": {ids["tent-price"], ids["lamp-warranty"], ids["stove-fuel"]},
        "max_score=3": {ids["tent-vague"], ids["lamp-long"]},
        "min_score=3&max_score=4": {ids["lamp-warranty"], ids["lamp-long"], ids["stove-fuel"]},
        "flag=judge": {ids["tent-vague"]},
        "status=flagged": {ids["tent-vague"], ids["lamp-long"]},
        "generator=self-instruct": {ids["tent-price"], ids["lamp-long"], ids["stove-fuel"]},
        "round=2": {ids["lamp-long"], ids["stove-fuel"]},
        "round=2&topic=lamps": {ids["lamp-long"]},
    }
    for query, expected in cases.items():
        assert row_ids(client.get(f"/q/faq?{query}").text) == expected, query
    assert shown_item(client.get("/q/faq/review?topic=stoves").text) == ids["stove-fuel"]
    bad = client.get("/q/faq?min_score=high")
    assert bad.status_code == 400 and "not a whole number" in bad.text
    assert client.get("/q/faq?status=maybe").status_code == 400


def test_progress_counts_decided_and_own_reviews(registry, store, ids):
    client = client_for(registry)
    token = login(client, "ann")
    decide(client, token, ids["tent-price"], decision="accept")
    page = client.get("/q/faq").text
    assert "<strong>1 / 5</strong> decided" in page
    assert 'class="mine-done">1<' in page
    index = client.get("/").text
    assert "1 / 5" in index and "Start reviewing" in index


def test_unknown_queue_or_item_is_404(registry, store, ids):
    other = store.open_round("other", spec_sha256="s", teacher_model="t", guidance={})
    store.finish_round(other.id, [NewCandidate(_row("Elsewhere?", "Yes.", None), {})], usage={}, filter_counts={},
                       failures=[], n_generated=1)
    foreign = store.candidates("other")[0].id
    client = client_for(registry)
    token = login(client, "ann")
    assert client.get("/q/nope").status_code == 404
    assert client.get("/q/nope/review").status_code == 404
    missing = client.get("/q/faq/items/9999")
    assert missing.status_code == 404 and "not found" in missing.text
    assert client.get(f"/q/faq/items/{foreign}").status_code == 404
    assert decide(client, token, 9999, decision="accept").status_code == 404
    assert client.get("/no/such/page").status_code == 404


def test_stats_page_shows_kappa_and_reviewer_statistics(registry, ids):
    spec = ReviewSpec(min_reviews=2, reviewers_per_item=2)
    ann, bob = client_for(registry, spec), client_for(registry, spec)
    ann_token, bob_token = login(ann, "ann"), login(bob, "bob")
    for item, a, b in ((ids["tent-price"], "accept", "accept"), (ids["tent-vague"], "reject", "reject"),
                       (ids["lamp-warranty"], "accept", "reject")):
        decide(ann, ann_token, item, decision=a, seconds=10)
        decide(bob, bob_token, item, decision=b, seconds=20)
    page = ann.get("/stats?queue=faq").text
    assert "Cohen&#39;s kappa" in page or "Cohen's kappa" in page
    assert re.search(r'class="kappa-value">0\.\d{3}<', page)
    assert "<td>ann</td><td>3</td>" in page and "<td>bob</td><td>3</td>" in page
    assert ann.get("/stats?queue=nope").status_code == 404


# -- serve_review's session secret -----------------------------------------------------------------


def test_session_secret_is_made_once_owner_only(tmp_path):
    from tunewright.review.serve import session_secret

    secret = session_secret(tmp_path)
    path = tmp_path / "secret.key"
    assert len(secret) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert session_secret(tmp_path) == secret
    os.chmod(path, 0o644)
    assert session_secret(tmp_path) == secret and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_serve_review_builds_the_app_from_the_workspace(tmp_path, monkeypatch):
    import uvicorn

    from tunewright.config import Recipe
    from tunewright.review.serve import serve_review
    from tunewright.workspace import Workspace

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    workspace = Workspace(tmp_path, Recipe(name="shop"))
    serve_review(workspace, port=9999)
    app = calls["app"]
    assert (calls["host"], calls["port"]) == ("127.0.0.1", 9999)
    assert app.state.queue_default == "shop" and app.state.spec == ReviewSpec()
    assert (tmp_path / "review" / "secret.key").is_file()
    workspace.registry.close()


def test_apply_an_edit_to_similar_rows_preview_then_apply(registry, store, ids):
    from review_helpers import BagOfWords

    record = store.open_round("faq", spec_sha256="spec", teacher_model="teacher-7b", guidance={})
    twin = NewCandidate(_row("How bright is the Aurora lantern?", "It gives 300 lumens.", 4), {"generator": "paraphrase"})
    store.finish_round(record.id, [twin], usage={}, filter_counts={}, failures=[], n_generated=1)
    twin_id = max(c.id for c in store.candidates("faq"))
    client = TestClient(create_app(registry, ReviewSpec(), secret_key=SECRET, queue_default="faq",
                                   embedder=BagOfWords()))
    token = login(client, "ann")
    source = ids["lamp-long"]
    assert client.get(f"/q/faq/items/{source}/correct").status_code == 400  # nothing edited yet
    item = store.get(source)
    edited = {"decision": "accept", "turns": [m["content"] for m in item.messages[:-1]] + ["It gives 350 lumens."]}
    assert decide(client, token, source, **edited).status_code == 200
    assert 'id="correct-similar"' in client.get(f"/q/faq/items/{source}").text
    page = client.get(f"/q/faq/items/{source}/correct?min_similarity=0.3")
    assert f'value="{twin_id}"' in page.text and "It gives 350 lumens." in page.text
    assert store.get(twin_id).answer == "It gives 300 lumens."  # the preview changed nothing
    response = client.post(f"/q/faq/items/{source}/correct", data={"csrf": token, "min_similarity": "0.3",
                                                                  "ids": [str(twin_id)]}, follow_redirects=False)
    assert response.status_code == 303
    assert store.get(twin_id).answer == "It gives 350 lumens." and store.get(twin_id).status == "pending"
    missing_csrf = client.post(f"/q/faq/items/{source}/correct", data={"ids": [str(twin_id)]})
    assert missing_csrf.status_code == 403
