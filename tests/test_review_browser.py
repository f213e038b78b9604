"""The review UI in a real browser: log in, review with the keyboard, edit with a diff, bulk-accept.

Drives Debian's chromium through Playwright against the real app on uvicorn. Screenshots go to
$TUNEWRIGHT_SCREENSHOTS when set (for the issue note), else to the test's tmp folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (scripts/ensure-chromium.sh installs it for `make test`)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from review_helpers import running_app  # noqa: E402
from tunewright.config.synth import ReviewSpec  # noqa: E402
from tunewright.review.web import create_app  # noqa: E402

# The web tests' fixtures too: a tmp SQLite registry with reviewers ann and bob.
from test_review_web import GUIDELINES, PASSWORD, SECRET, registry, seed_queue, store  # noqa: E402,F401

expect = sync_api.expect


@pytest.fixture
def server(registry, store):
    """The real app on a free loopback port, in a background thread."""
    ids = seed_queue(store)
    app = create_app(registry, ReviewSpec(guidelines=GUIDELINES), secret_key=SECRET, queue_default="faq")
    with running_app(app) as base:
        yield base, ids


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("TUNEWRIGHT_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_keyboard_review_edit_and_bulk_accept(server, store, shots):
    base, ids = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(10_000)
            item_id = page.locator(".item-id")

            page.goto(base + "/q/faq/review")  # not logged in: sent to the log-in page, then back
            expect(page.get_by_role("heading", name="Log in to review")).to_be_visible()
            page.screenshot(path=shots / "review-login.png")
            page.get_by_label("Name").fill("ann")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()

            expect(item_id).to_have_text(f"#{ids['tent-price']}")
            expect(page.locator(".guidelines")).to_contain_text(GUIDELINES)
            page.keyboard.press("?")
            expect(page.locator("#help")).to_be_visible()
            page.keyboard.press("Escape")
            expect(page.locator("#help")).to_be_hidden()
            page.keyboard.press("a")

            expect(item_id).to_have_text(f"#{ids['tent-vague']}")
            expect(page.locator(".flash")).to_contain_text(f"Accepted item {ids['tent-price']}")
            page.keyboard.press("r")
            expect(page.locator("#reject-panel")).to_be_visible()
            page.get_by_label("not grounded").check()
            page.keyboard.press("Enter")

            expect(item_id).to_have_text(f"#{ids['lamp-warranty']}")
            page.keyboard.press("3")
            expect(page.locator('input[name="rating"][value="3"]')).to_be_checked()
            page.keyboard.press("a")

            expect(item_id).to_have_text(f"#{ids['lamp-long']}")
            page.keyboard.press("e")
            answer = page.locator(".turn.assistant textarea")
            expect(answer).to_be_focused()
            answer.fill("It gives 350 lumens on its brightest setting.")
            diff = page.locator(".turn.assistant .diff")
            expect(diff.locator("del")).to_have_text("300")
            expect(diff.locator("ins").first).to_have_text("350")
            page.keyboard.press("a")  # typing: a letter is text, not a decision
            expect(answer).to_have_value("It gives 350 lumens on its brightest setting.a")
            answer.fill("It gives 350 lumens on its brightest setting.")
            expect(diff.locator("ins").last).to_contain_text("brightest setting")
            page.screenshot(path=shots / "review-edit-diff.png", full_page=True)
            page.keyboard.press("Control+Enter")

            expect(item_id).to_have_text(f"#{ids['stove-fuel']}")
            page.keyboard.press("k")  # back to the item just decided, with the decision shown
            expect(item_id).to_have_text(f"#{ids['lamp-long']}")
            expect(page.locator("#your-decision")).to_contain_text("accepted")
            expect(page.locator("#your-decision")).to_contain_text("with your edit")
            page.keyboard.press("j")
            expect(item_id).to_have_text(f"#{ids['stove-fuel']}")

            page.goto(base + "/q/faq")
            page.locator('select[name="status"]').select_option("pending")
            page.get_by_role("button", name="Filter").click()
            page.locator("#bulk-accept").click()
            expect(page.locator(".bulk-count")).to_have_text("1")
            page.locator("#confirm").click()
            expect(page.locator(".flash")).to_have_text("Accepted 1 item.")
            page.goto(base + "/q/faq")
            page.screenshot(path=shots / "review-queue-after-bulk.png", full_page=True)

            page.reload()
            expect(page.locator(".progress-text")).to_contain_text("5 / 5 decided")
            expect(page.locator(".mine-done")).to_have_text("5")
        finally:
            browser.close()

    reviews = {r.candidate_id: r for r in store.reviews("faq")}
    assert len(reviews) == 5 and {r.reviewer for r in reviews.values()} == {"ann"}
    assert reviews[ids["tent-price"]].decision == "accept"
    assert (reviews[ids["tent-vague"]].decision, reviews[ids["tent-vague"]].reasons) == ("reject", ["not grounded"])
    assert (reviews[ids["lamp-warranty"]].decision, reviews[ids["lamp-warranty"]].rating) == ("accept", 3)
    edited = reviews[ids["lamp-long"]]
    assert edited.decision == "accept" and edited.edited
    assert edited.after[-1]["content"] == "It gives 350 lumens on its brightest setting."
    assert all(reviews[i].seconds is not None for i in (ids["tent-price"], ids["tent-vague"], ids["lamp-long"]))
    assert reviews[ids["stove-fuel"]].decision == "accept"  # by the bulk accept
    assert {c.status for c in store.candidates("faq")} <= {"accepted", "rejected"}
    for name in ("review-login.png", "review-edit-diff.png", "review-queue-after-bulk.png"):
        assert (shots / name).stat().st_size > 0
