"""Drift report: live request inputs vs the training data (lengths, topic clusters, OOD share)."""

from __future__ import annotations

import itertools
import json
import random
import zlib
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch

from tunewright.errors import TunewrightError
from tunewright.serve.drift import (
    build_drift_report,
    drift_for_workspace,
    jensen_shannon,
    ks_two_sample,
    live_text,
    read_request_logs,
    write_drift_report,
)

DIM = 256


def fake_embed(texts):
    """Hashed bag of words, unit length: same words, same direction; disjoint vocabularies, near-orthogonal."""
    out = torch.zeros(len(texts), DIM)
    for i, text in enumerate(texts):
        for word in text.lower().replace("?", " ").replace(".", " ").split():
            out[i, zlib.crc32(word.encode()) % DIM] += 1.0
    return torch.nn.functional.normalize(out, dim=-1)


PRODUCTS = ["Ridgeback 2 Tent", "Aurora Headlamp", "Summit 40 Backpack", "Trailblazer Boots", "Canyon Sleeping Bag",
            "Ember Camp Stove", "Drift Kayak Paddle", "Alpine Trekking Poles", "Harbor Rain Jacket", "Pine Hammock"]
SHOP_TEMPLATES = ["How much does the {p} cost?", "What is the price of the {p}?", "How much does the {p} weigh?",
                  "What warranty does the {p} have?", "How long is the warranty on the {p}?", "Is the {p} heavy?",
                  "Can I return the {p} after 30 days?", "Do you ship the {p} to Canada?"]
TAX_QUESTIONS = ["Can I deduct mortgage interest on a rental property under federal tax law?",
                 "What qualifies as a capital gain for income tax purposes?",
                 "How are estimated quarterly tax payments calculated by the IRS?",
                 "Is alimony taxable income after the 2017 tax reform act?",
                 "What penalties apply for filing a late corporate tax return?",
                 "Does inheritance trigger estate tax liability for heirs?",
                 "How does depreciation of business equipment reduce taxable income?",
                 "Which statute of limitations applies to an IRS audit?",
                 "Are charitable donations deductible when itemizing on Schedule A?",
                 "How is self-employment tax computed for sole proprietors?",
                 "What is the alternative minimum tax and who must pay it?",
                 "Can a nonresident alien claim treaty benefits on dividend withholding?"]


def shop_questions(n, seed):
    rng = random.Random(seed)
    return [rng.choice(SHOP_TEMPLATES).format(p=rng.choice(PRODUCTS)) for _ in range(n)]


def chat(text, i=0, served="peachtree", ts="2026-11-29T10:00:00+00:00"):
    return {"ts": ts, "request_id": f"req-{i}", "model": served, "served": served, "endpoint": "chat",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
            "response": "ok", "prompt_tokens": 10, "completion_tokens": 2, "latency_s": 0.1, "finish_reason": "stop"}


def records(texts, **kw):
    return [chat(t, i, **kw) for i, t in enumerate(texts)]


TRAIN = shop_questions(120, seed=1)


def test_same_distribution_is_not_drifted():
    report = build_drift_report(TRAIN, records(shop_questions(80, seed=2)), embed=fake_embed)
    assert report["status"] == "ok" and report["verdict"] == {"drifted": False, "reasons": []}
    topics = report["topics"]
    assert topics["k"] == 8 and len(topics["clusters"]) == 8
    # By construction about 5% of same-distribution inputs lie past the training 95th percentile.
    assert topics["jsd"] < 0.05 and topics["ood_share"] <= 0.15
    assert sum(c["train_share"] for c in topics["clusters"]) == pytest.approx(1.0)
    assert sum(c["live_share"] for c in topics["clusters"]) == pytest.approx(1.0)
    assert all(1 <= len(set(c["label"])) == len(c["label"]) <= 3 and set(c["label"]) <= set(TRAIN) for c in topics["clusters"])
    assert report["lengths"]["words"]["ks"]["p_value"] > 0.01
    json.dumps(report)  # JSON-able as promised


def test_different_topic_is_drifted_with_ood_examples():
    live = shop_questions(20, seed=3) + TAX_QUESTIONS * 2
    report = build_drift_report(TRAIN, records(live), embed=fake_embed)
    topics = report["topics"]
    assert report["verdict"]["drifted"] is True
    # New-topic inputs land on whichever cluster is least far, so the OOD share, not JSD, catches them.
    assert topics["ood_share"] >= 0.5
    examples = topics["ood_examples"]
    assert len(examples) == 10
    assert all(ex["text"] in TAX_QUESTIONS for ex in examples)
    assert [ex["distance"] for ex in examples] == sorted((ex["distance"] for ex in examples), reverse=True)
    assert any("far from all training topics" in r for r in report["verdict"]["reasons"])


def test_shifted_mix_of_known_topics_is_caught_by_jsd():
    rng = random.Random(8)
    live = [f"How much does the {rng.choice(PRODUCTS)} cost?" for _ in range(40)]
    report = build_drift_report(TRAIN, records(live), embed=fake_embed)
    topics = report["topics"]
    assert topics["jsd"] > 0.3 and topics["jsd"] > topics["jsd_chance_p95"]
    assert topics["ood_share"] < 0.1
    assert max(c["live_share"] for c in topics["clusters"]) >= 0.5
    assert report["verdict"]["drifted"] is True and report["verdict"]["reasons"][0].startswith("topic mix moved")


def test_longer_inputs_move_the_length_test_only():
    # Each question said three times: the same bag-of-words direction, three times the length.
    live = [" ".join([q] * 3) for q in shop_questions(40, seed=4)]
    report = build_drift_report(TRAIN, records(live), embed=fake_embed)
    words = report["lengths"]["words"]
    assert words["ks"]["statistic"] > 0.9 and words["ks"]["p_value"] < 1e-6
    assert words["live_share_above_train_max"] == 1.0
    assert words["live"]["median"] == pytest.approx(3 * words["train"]["median"], rel=0.35)
    assert report["topics"]["ood_share"] < 0.1
    assert report["verdict"]["drifted"] is True
    assert [r.split(":")[0] for r in report["verdict"]["reasons"]] == ["input lengths differ"]


def test_fewer_than_ten_live_requests_gives_no_verdict():
    def must_not_embed(texts):
        raise AssertionError("no embedding work without a verdict")

    report = build_drift_report(TRAIN, records(shop_questions(7, seed=5)), embed=must_not_embed)
    assert report["verdict"] is None and report["status"] == "not_enough_data"
    assert "not enough live requests" in report["message"] and "7" in report["message"]
    assert report["per_model"] == [{"served": "peachtree", "requests": 7, "requested_as": {"peachtree": 7}}]


def test_per_model_counts_and_drift_only_with_enough_requests():
    live = records(shop_questions(25, seed=6), served="peachtree") + records(TAX_QUESTIONS[:5], served="base")
    report = build_drift_report(TRAIN, live, embed=fake_embed)
    per = {m["served"]: m for m in report["per_model"]}
    assert per["peachtree"]["requests"] == 25 and per["base"]["requests"] == 5
    assert per["peachtree"]["ood_share"] < 0.2 and "jsd" in per["peachtree"]
    assert "jsd" not in per["base"] and "ood_share" not in per["base"]


def test_live_text_chat_and_completions():
    record = chat("last question")
    record["messages"] = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
                          {"role": "user", "content": "last question"}]
    assert live_text(record) == "last question"
    assert live_text({"endpoint": "completions", "prompt": "Once upon"}) == "Once upon"
    with pytest.raises(TunewrightError, match="no user message"):
        live_text({"endpoint": "chat", "messages": [{"role": "system", "content": "x"}]})


def _write_logs(folder, rows_by_file):
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in rows_by_file.items():
        (folder / name).write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return folder


def test_malformed_log_line_names_file_and_line(tmp_path):
    folder = _write_logs(tmp_path, {"a.jsonl": [chat("ok"), "", "{not json"]})
    with pytest.raises(TunewrightError) as err:
        read_request_logs(folder)
    assert str(err.value).startswith(f"{folder / 'a.jsonl'}:3: ")
    _write_logs(tmp_path, {"a.jsonl": [chat("ok"), {"endpoint": "chat", "messages": []}]})
    with pytest.raises(TunewrightError, match=r"a\.jsonl:2: field 'messages'"):
        read_request_logs(folder)
    (folder / "a.jsonl").write_bytes(json.dumps(chat("ok")).encode() + b"\n\xff\xfe\n")
    with pytest.raises(TunewrightError, match=r"a\.jsonl:2: not UTF-8"):
        read_request_logs(folder)


def test_since_filter(tmp_path):
    start = datetime(2026, 11, 29, 10, tzinfo=timezone.utc)
    day = lambda d: (start + timedelta(days=d)).isoformat()  # noqa: E731
    folder = _write_logs(tmp_path, {"2026-11-29.jsonl": [chat("a", ts=day(0)), chat("b", ts=day(1))],
                                    "2026-12-01.jsonl": [chat("c", ts=day(2))]})
    assert [live_text(r) for r in read_request_logs(folder)] == ["a", "b", "c"]
    assert [live_text(r) for r in read_request_logs(folder, since=start + timedelta(days=1))] == ["b", "c"]
    # A naive cut-off is read as UTC, like the logs.
    assert [live_text(r) for r in read_request_logs(folder, since=datetime(2026, 12, 1, 9))] == ["c"]
    _write_logs(tmp_path, {"2026-12-02.jsonl": [{"endpoint": "completions", "prompt": "no time"}]})
    with pytest.raises(TunewrightError, match=r"2026-12-02\.jsonl:1: field 'ts'"):
        read_request_logs(folder, since=start)


def test_html_and_json_written_with_verdict_and_thresholds(tmp_path):
    report = build_drift_report(TRAIN, records(shop_questions(20, seed=7) + TAX_QUESTIONS), embed=fake_embed)
    json_path, html_path = write_drift_report(tmp_path / "drift", report)
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report))
    html = html_path.read_text()
    assert "Drifted:" in html and "Jensen-Shannon divergence &gt; 0.1" in html and "&gt; 20%" in html
    assert html.count("data:image/png;base64,") == 2
    assert TAX_QUESTIONS[0].split()[0] in html  # an OOD example is listed
    few = build_drift_report(TRAIN, records(["x"] * 3), embed=fake_embed)
    _, few_html = write_drift_report(tmp_path / "few", few)
    assert "No verdict: not enough live requests: 3 logged" in few_html.read_text()


def _exact_ks_p(a, b):
    """Permutation p-value of the KS statistic, every split of the pooled sample enumerated: the
    definition of the exact test, with nothing borrowed from scipy."""
    pooled, n = list(a) + list(b), len(a)

    def d(x, y):
        return max(abs(sum(v <= t for v in x) / len(x) - sum(v <= t for v in y) / len(y)) for t in pooled)

    observed = d(a, b)
    splits = list(itertools.combinations(range(len(pooled)), n))
    hits = 0
    for chosen in splits:
        inside = set(chosen)
        x = [pooled[i] for i in chosen]
        y = [pooled[i] for i in range(len(pooled)) if i not in inside]
        hits += d(x, y) >= observed - 1e-12
    return hits / len(splits)


def test_statistics_against_hand_values():
    assert ks_two_sample([1, 2, 3], [1, 2, 3]) == (0.0, 1.0)
    d, p = ks_two_sample([1, 2, 3, 4], [3, 4, 5, 6])
    assert d == 0.5
    assert ks_two_sample(range(200), range(100, 300))[0] == 0.5 and ks_two_sample(range(200), range(100, 300))[1] < 1e-9
    assert 0.5 < p < 1.0  # four points each cannot be significant
    # Without ties the exact test is the permutation test; the widest gap is at 9 (5/5 vs 4/7).
    a, b = [1, 3, 5, 7, 9], [2, 4, 6, 8, 10, 12, 14]
    d, p = ks_two_sample(a, b)
    assert d == pytest.approx(3 / 7)
    assert p == pytest.approx(_exact_ks_p(a, b), abs=1e-12)  # 252 of 462 splits


def test_ks_matches_scipy_on_request_lengths():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(7)
    # Word counts as the report feeds them: integers with many ties, samples of unequal size, from
    # the few-request sizes where scipy's exact distribution applies up to where it goes asymptotic.
    for n_train, n_live, shift in [(12, 10, 0), (40, 25, 3), (300, 60, 1), (2000, 900, 0), (5000, 4000, 2)]:
        train = rng.poisson(12, n_train)
        live = rng.poisson(12 + shift, n_live)
        reference = ks_2samp(train, live)
        assert ks_two_sample(train.tolist(), live.tolist()) == pytest.approx(
            (reference.statistic, reference.pvalue), rel=1e-9, abs=1e-15)
    assert jensen_shannon(np.array([1.0, 1.0]), np.array([2.0, 2.0])) == pytest.approx(0.0)
    assert jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


def test_workspace_report_and_opt_in_error(tmp_path, tiny_model_dir):
    from tunewright.config import Recipe
    from tunewright.data.api import register_rows
    from tunewright.data.schema import ChatRow
    from tunewright.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", Recipe(name="shop", base_model=str(tiny_model_dir)))
    rows = [ChatRow(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": "Yes."}]) for q in set(TRAIN)]
    register_rows(ws, ws.recipe.dataset_name, rows, spec={"kind": "test"})
    with pytest.raises(TunewrightError, match=r"opt-in.*serve\.log_requests: true"):
        drift_for_workspace(ws, embed=fake_embed)
    _write_logs(ws.root / "logs" / "requests", {"day.jsonl": records(TAX_QUESTIONS)})
    report, json_path, html_path = drift_for_workspace(ws, embed=fake_embed)
    assert json_path == ws.root / "reports" / "drift" / "drift.json" and html_path.is_file()
    assert report["dataset"]["name"] == ws.recipe.dataset_name and report["n_train"] == len(rows)
    assert report["verdict"]["drifted"] is True


def test_real_embedder_detects_topical_drift():
    from tunewright.models.embeddings import default_embedder

    train = ["How much does the Ridgeback 2 Tent cost?", "What is the weight of the Aurora Headlamp?",
             "How long is the warranty on the Summit 40 Backpack?", "Can I return hiking boots I wore once?",
             "Is shipping free on orders over $75?", "How long does standard shipping take?",
             "Do you ship to Canada?", "What are your customer support hours?", "What is your support email?",
             "Do you price match a lower advertised price?", "How much is expedited shipping?",
             "Is there a restocking fee for an opened camp stove?", "When will I get my refund?",
             "What warranty do Peachtree backpacks have?", "Where is your store?", "How heavy is the Canyon Sleeping Bag?",
             "What does the Ember Camp Stove sell for?", "How do I file a warranty claim?",
             "Can I exchange a final sale item?", "What is your phone number?", "What is the return window?",
             "By what time must I order for same-day shipping?", "How much does the Trailblazer Boots pair cost?",
             "Is the Pine Hammock covered by warranty?", "What is the price of the Alpine Trekking Poles?"]
    live = records(TAX_QUESTIONS + ["What is the capital gains tax rate on long-held stock?",
                                    "Who must file a gift tax return?", "How do tax courts handle disputes with the IRS?"])
    assert len(train) + len(live) == 40
    report = build_drift_report(train, live, embed=default_embedder().encode)
    assert report["topics"]["k"] == 5
    assert report["verdict"]["drifted"] is True
    assert report["topics"]["ood_share"] >= 0.8
    assert len(report["topics"]["ood_examples"]) == 10
    # Control: unseen in-domain paraphrases stay inside the training topics.
    same = ["How much is the Harbor Rain Jacket?", "What does the Drift Kayak Paddle weigh?",
            "Can I send back a tent after two weeks?", "How fast is express delivery?", "When is customer service open?",
            "Do you deliver outside the US?", "What is the warranty period for the Aurora Headlamp?",
            "How much does the Pine Hammock cost?", "Can I return worn running shoes?",
            "What email do I write to for help?", "How much do I need to spend for free shipping?",
            "Is the Summit 40 Backpack heavy?"]
    control = build_drift_report(train, records(same), embed=default_embedder().encode)
    assert control["topics"]["ood_share"] < 0.2 < report["topics"]["ood_share"]
