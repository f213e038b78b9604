"""The whole loop as a new user runs it: two rounds against a local OpenAI-compatible server (the
scripted one, real HTTP), each reviewed in headless Chromium with the keyboard, then the accepted
rows registered as a dataset version and trained with `tunewright train`.

Screenshots go to $TUNEWRIGHT_SCREENSHOTS when set (for the issue note)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_review_browser import BROWSER_ARGS, CHROMIUM, sync_api  # skips without chromium/playwright

from review_helpers import running_app
from scripted_openai import ScriptedServer
from test_synth_rounds import PREAMBLE, _workspace, guided_teacher
from tunewright.cli.main import main
from tunewright.review import ReviewStore
from tunewright.review.web import create_app

expect = sync_api.expect
PASSWORD = "walkthrough password"


def review_round_in_browser(page, base: str, shots: Path, round_number: int) -> None:
    """Accept clean answers with `a`; reject preamble answers with `r`, a reason, a note and Enter."""
    page.goto(base + "/q/shop/review")
    for _ in range(50):
        if page.locator(".item-id").count() == 0:
            break  # the "all done" page
        shown = page.locator(".item-id").inner_text()
        answer = page.locator(".turn.assistant .content").inner_text()
        if answer.startswith(PREAMBLE.strip()):
            page.keyboard.press("r")
            page.get_by_label("style").check()
            page.locator('input[name="note"]').fill("Drop the 'As an AI language model' preamble")
            if round_number == 1 and not (shots / "walkthrough-reject.png").exists():
                page.screenshot(path=shots / "walkthrough-reject.png", full_page=True)
            page.keyboard.press("Enter")
        else:
            page.keyboard.press("4")
            page.keyboard.press("a")
        expect(page.locator(".flash")).to_contain_text(f"item {shown.lstrip('#')}")
    else:
        pytest.fail("the review queue never emptied")


def test_two_rounds_reviewed_in_the_browser_then_trained(tiny_model_dir, tmp_path, capsys, monkeypatch):
    shots = Path(os.environ.get("TUNEWRIGHT_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("REVIEWER_PASSWORD", PASSWORD)
    with ScriptedServer(responder=guided_teacher) as teacher:
        workspace = _workspace(tmp_path / "ws", tiny_model_dir, teacher.url, filters=[
            "exact-duplicates", "near-duplicates", "novelty", "length", "pii"])
        ws = ["--workspace", str(workspace.root)]
        main(ws + ["review", "add-reviewer", "ann", "--password-env", "REVIEWER_PASSWORD"])
        app = create_app(workspace.registry, workspace.recipe.synth.review, secret_key="k" * 32,
                         queue_default="shop")
        with running_app(app) as base, sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(10_000)
                page.goto(base + "/login")
                page.get_by_label("Name").fill("ann")
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Log in").click()
                for number in (1, 2):
                    main(ws + ["synth", "run"])
                    assert f"ran round {number}: 8 rows generated, 8 new in the queue" in capsys.readouterr().out
                    review_round_in_browser(page, base, shots, number)
                page.goto(base + "/q/shop")
                page.screenshot(path=shots / "walkthrough-queue.png", full_page=True)
            finally:
                browser.close()

    summaries = ReviewStore(workspace.registry).round_summaries("shop")
    assert [(s.n_accepted, s.n_rejected) for s in summaries] == [(4, 4), (8, 0)]
    main(ws + ["review", "dataset"])
    record = workspace.registry.get_dataset("shop")
    assert record.n_train + record.n_eval == 12 and len(record.spec["review_ids"]) == 12
    main(ws + ["train"])
    [run] = workspace.registry.list_runs()
    assert run.status == "completed" and run.dataset_id == record.id
    [adapter] = workspace.registry.list_adapters()
    assert adapter.run_id == run.id
