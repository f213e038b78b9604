"""Whole rounds against a scripted OpenAI-compatible teacher over real HTTP: generation, filters,
the review queue, failures and resumption, the feedback loop, and a reviewed dataset that trains."""

from __future__ import annotations

import json
import random
import re

import pytest

from scripted_openai import ScriptedServer
from tunewright.cli.main import main
from tunewright.config import Recipe, TrainSpec
from tunewright.config.synth import FilterSpec, GeneratorSpec, SynthSpec
from tunewright.errors import TunewrightError
from tunewright.review import QueueFilter, ReviewStore
from tunewright.review.dataset import build_reviewed_dataset
from tunewright.synth.rounds import run_round
from tunewright.workspace import Workspace

VOCAB = ("tent stove boot parka kayak paddle lantern compass rope harness sleeping bag trail map filter bottle "
         "jacket glove helmet ski snowshoe canoe hammock tarp stake pole zipper seam warranty refund order "
         "delivery parcel courier invoice receipt store aisle counter coupon gift card member points season "
         "spring summer autumn winter river lake summit ridge valley forest desert coast island canyon").split()
PREAMBLE = "As an AI language model, "
NOTE = "Drop the 'As an AI language model' preamble"
N_RE = re.compile(r"Write (\d+) new question/answer pairs")


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.sample(VOCAB, n))


def guided_teacher(body: dict) -> str:
    """A teacher whose quality follows the guidance it is given: until a prompt carries the
    reviewers' note about the preamble, every other answer starts with it."""
    prompt = body["messages"][-1]["content"]
    n = int(N_RE.search(prompt).group(1))
    rng = random.Random(f"{body.get('seed', 0)}:{prompt}")  # like a sampling teacher: new prompt, new rows
    heeded = "preamble" in prompt
    pairs = []
    for i in range(n):
        answer = f"Our {_words(rng, 6)} policy covers it."
        if not heeded and i % 2 == 0:
            answer = PREAMBLE + answer
        pairs.append({"question": f"What about the {_words(rng, 7)}?", "answer": answer})
    return json.dumps(pairs)


def simulated_reviewer(store: ReviewStore, queue: str = "shop") -> None:
    for item in store.todo(queue, "ann"):
        if item.answer.startswith(PREAMBLE):
            store.review(item.id, reviewer="ann", decision="reject", reasons=["style"], note=NOTE)
        else:
            store.review(item.id, reviewer="ann", decision="accept", rating=4)


def _workspace(root, base_model, url: str, **synth) -> Workspace:
    spec = SynthSpec(
        task="Answer outdoor-shop customer questions.", target=100, rows_per_round=8,
        seeds=[{"question": "Is shipping free?", "answer": "Shipping is free over $75."}],
        teacher={"kind": "openai-compatible",
                 "settings": {"base_url": url, "model": "scripted", "max_retries": 0, "timeout_s": 5}},
        generators=[GeneratorSpec(kind="self-instruct", settings={"new_per_prompt": 4})],
        **synth,
    )
    recipe = Recipe(name="shop", base_model=str(base_model), synth=spec,
                    train=TrainSpec(r=4, alpha=8, learning_rate=1e-2, batch_size=4, max_steps=2, max_length=128))
    return Workspace.init(root, recipe)


def test_feedback_loop_raises_acceptance_from_round_one_to_two(tiny_model_dir, tmp_path):
    with ScriptedServer(responder=guided_teacher) as server:
        workspace = _workspace(tmp_path / "ws", tiny_model_dir, server.url)
        store = ReviewStore(workspace.registry)
        first = run_round(workspace)
        assert first.n_generated == 8 and first.n_added == 8 and first.round.status == "completed"
        simulated_reviewer(store)
        second = run_round(workspace)
        simulated_reviewer(store)
    rates = [s.acceptance_rate for s in store.round_summaries("shop")]
    assert rates[0] == 0.5 and rates[1] == 1.0
    # Round 2's prompts carried the clustered reject reason and the well-rated examples.
    assert NOTE in second.round.guidance["notes"][0]
    round_two_prompts = [r["body"]["messages"][-1]["content"] for r in server.requests[2:]]
    assert all(NOTE in p and "Reviewers rated these examples highly" in p for p in round_two_prompts)
    # Self-Instruct mixes accepted machine rows into round 2's examples and records them as parents.
    parents = [p for c in store.candidates("shop", QueueFilter(round=2)) for p in c.provenance["parents"]]
    assert any(p.startswith("cand-") for p in parents)


def test_every_row_carries_provenance(tiny_model_dir, tmp_path):
    with ScriptedServer(responder=guided_teacher) as server:
        workspace = _workspace(tmp_path / "ws", tiny_model_dir, server.url)
        run_round(workspace)
    item = ReviewStore(workspace.registry).candidates("shop")[0]
    prov = item.provenance
    assert prov["generator"] == "self-instruct" and prov["teacher_model"] == "scripted" and prov["round"] == 1
    assert len(prov["template_sha256"]) == 64 and "seed" in prov["params"] and prov["parents"] == ["seed-0"]


def test_failed_calls_are_reported_and_a_rerun_pays_only_for_them(tiny_model_dir, tmp_path):
    # Two prompts per round; the first call times out at the HTTP level (500 without retries).
    with ScriptedServer(script=[("status", (500, {}))], responder=guided_teacher) as server:
        workspace = _workspace(tmp_path / "ws", tiny_model_dir, server.url)
        first = run_round(workspace)
        assert first.round.status == "incomplete" and first.n_added == 4
        assert [f["kind"] for f in first.failures] == ["http"]
        calls_before = len(server.requests)
        again = run_round(workspace)
    assert again.resumed and again.round.number == 1 and again.round.status == "completed"
    assert len(server.requests) - calls_before == 1  # only the failed call went out again
    assert again.usage["cached_calls"] == 1 and again.usage["calls"] == 1
    assert again.n_added == 4 and len(ReviewStore(workspace.registry).candidates("shop")) == 8


@pytest.mark.parametrize("reply", ["not json at all", "[]", ("malformed", None), ("empty", None)])
def test_bad_teacher_replies_do_not_stop_the_round(tiny_model_dir, tmp_path, reply):
    step = ("answer", reply) if isinstance(reply, str) else reply
    with ScriptedServer(script=[step], responder=guided_teacher) as server:
        workspace = _workspace(tmp_path / "ws", tiny_model_dir, server.url)
        result = run_round(workspace)
    assert result.n_added == 4  # the other prompt's rows arrived
    assert result.failures, "the bad reply is reported"


def test_bad_settings_fail_before_any_call(tiny_model_dir, tmp_path):
    with ScriptedServer(responder=guided_teacher) as server:
        workspace = _workspace(tmp_path / "ws", tiny_model_dir, server.url)
        bad = workspace.recipe.synth.model_copy(update={
            "generators": [GeneratorSpec(kind="self-instruct", settings={"new_per_promt": 4})]})
        workspace.recipe = workspace.recipe.model_copy(update={"synth": bad})
        with pytest.raises(TunewrightError) as error:
            run_round(workspace)
        assert error.value.field == "synth.generators[0].settings.new_per_promt"
        unknown = bad.model_copy(update={"generators": [GeneratorSpec(kind="no-such-generator")]})
        workspace.recipe = workspace.recipe.model_copy(update={"synth": unknown})
        with pytest.raises(TunewrightError, match="unknown synthetic-data generator 'no-such-generator'"):
            run_round(workspace)
        filters = bad.model_copy(update={"generators": [GeneratorSpec(kind="self-instruct")],
                                         "filters": [FilterSpec(kind="length", settings={"max_chars": 5})]})
        workspace.recipe = workspace.recipe.model_copy(update={"synth": filters})
        with pytest.raises(TunewrightError, match="unknown setting for filter 'length'"):
            run_round(workspace)
    assert server.requests == []


def test_missing_document_fails_before_any_call(tiny_model_dir, tmp_path):
    with ScriptedServer(responder=guided_teacher) as server:
        workspace = _workspace(tmp_path / "ws", tiny_model_dir, server.url, documents=["nowhere.md"])
        with pytest.raises(TunewrightError, match="document not found"):
            run_round(workspace)
    assert server.requests == []


def test_cli_round_review_dataset_and_train(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REVIEWER_PASSWORD", "a long password")
    with ScriptedServer(responder=guided_teacher) as server:
        workspace = _workspace(tmp_path / "ws", tiny_model_dir, server.url)
        ws = ["--workspace", str(workspace.root)]
        main(ws + ["synth", "run"])
        out = capsys.readouterr().out
        assert "ran round 1: 8 rows generated, 8 new in the queue" in out and "accept %" in out
    main(ws + ["review", "add-reviewer", "ann", "--password-env", "REVIEWER_PASSWORD"])
    simulated_reviewer(ReviewStore(workspace.registry))
    main(ws + ["synth", "rounds"])
    out = capsys.readouterr().out
    assert "50%" in out and "accepted so far: 4 of the spec's target 100 rows" in out
    main(ws + ["review", "dataset"])
    assert "dataset shop@" in capsys.readouterr().out
    record = workspace.registry.get_dataset("shop")
    assert record.n_train + record.n_eval == 4 and record.spec["kind"] == "review" and len(record.spec["review_ids"]) == 4
    assert {e["parent_kind"] for e in workspace.registry.lineage("dataset", record.id)
            if e["child_kind"] == "dataset"} == {"synth_round"}
    main(ws + ["train"])
    [run] = workspace.registry.list_runs()
    assert run.status == "completed" and run.dataset_id == record.id


def test_dataset_without_accepted_rows_is_refused(tiny_model_dir, tmp_path):
    with ScriptedServer(responder=guided_teacher) as server:
        workspace = _workspace(tmp_path / "ws", tiny_model_dir, server.url)
        run_round(workspace)
    with pytest.raises(TunewrightError, match="no accepted rows"):
        build_reviewed_dataset(workspace)


def test_round_assigns_items_blind_when_the_recipe_asks_for_several_reviewers(tiny_model_dir, tmp_path):
    from tunewright.config.synth import ReviewSpec
    from tunewright.review.reviewers import add_reviewer

    with ScriptedServer(responder=guided_teacher) as server:
        workspace = _workspace(tmp_path / "ws", tiny_model_dir, server.url,
                               review=ReviewSpec(min_reviews=2, reviewers_per_item=2))
        for name in ("ann", "bob", "cy"):
            add_reviewer(workspace.registry, name, "long enough password")
        run_round(workspace)
    store = ReviewStore(workspace.registry)
    loads = [len(store.todo("shop", name)) for name in ("ann", "bob", "cy")]
    assert sum(loads) == 16 and max(loads) - min(loads) <= 1


@pytest.mark.parametrize("argv,message", [
    (["synth", "run"], "no 'synth' section"),
    (["review", "add-reviewer", "ann", "--password-env", "NOT_SET_ANYWHERE"], "NOT_SET_ANYWHERE is not set"),
    (["review", "assign", "nobody"], "unknown reviewer 'nobody'"),
    (["review", "correct", "42", "--reviewer", "ann"], "review item 42 not found"),
    (["review", "dataset"], "no accepted rows"),
    (["review", "import", "missing.jsonl"], "missing.jsonl"),
])
def test_cli_bad_input_is_one_clear_line_and_exit_2(tiny_model_dir, tmp_path, capsys, argv, message):
    workspace = Workspace.init(tmp_path / "ws", Recipe(name="shop", base_model=str(tiny_model_dir)))
    with pytest.raises(SystemExit) as exit_:
        main(["--workspace", str(workspace.root)] + argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


JUDGE_PROMPT = "You grade training examples"


def _judged_workspace(root, base_model, server):
    return _workspace(root, base_model, server.url,
                      filters=[FilterSpec(kind="judge", settings={"rubric": "Helpful and correct."})])


def test_a_judge_verdict_that_mentions_empty_is_a_rejection_not_a_failed_call(tiny_model_dir, tmp_path):
    # The call succeeded; only the verdict is unreadable. Its parse error quotes the judge's words
    # ("... the answer is empty"), which once read as the teacher's "empty" failure and held the round open.
    def responder(body):
        if JUDGE_PROMPT in body["messages"][-1]["content"]:
            return json.dumps({"score": "n/a, the answer is empty", "rationale": "see http://example.com"})
        return guided_teacher(body)

    with ScriptedServer(responder=responder) as server:
        workspace = _judged_workspace(tmp_path / "ws", tiny_model_dir, server)
        result = run_round(workspace)
    assert result.round.status == "completed" and result.round.failures == []
    assert result.n_added == 8 and result.filter_counts["judge"] == 8
    flags = [f for c in ReviewStore(workspace.registry).candidates("shop") for f in c.flags]
    assert len(flags) == 8 and all(f["filter"] == "judge" and "the answer is empty" in f["reason"] for f in flags)


def test_a_failed_judge_call_keeps_the_round_open_and_a_rerun_scores_the_row(tiny_model_dir, tmp_path):
    def responder(body):
        if JUDGE_PROMPT in body["messages"][-1]["content"]:
            return json.dumps({"score": 5, "rationale": "fine"})
        return guided_teacher(body)

    # Two generation calls, then the first judge call gets an HTTP 500 (no retries).
    with ScriptedServer(script=[("answer", None), ("answer", None), ("status", (500, {}))],
                        responder=responder) as server:
        workspace = _judged_workspace(tmp_path / "ws", tiny_model_dir, server)
        first = run_round(workspace)
        assert first.round.status == "incomplete" and first.failures == []
        assert first.round.failures == [{"generator": "judge", "kind": "judge",
                                         "message": "not scored: http: status 500"}]
        again = run_round(workspace)
    assert again.resumed and again.round.status == "completed" and again.round.failures == []
