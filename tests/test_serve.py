"""`tunewright serve` through the official openai client over real HTTP, on the tiny model."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from serve_helpers import running_server, serve_workspace

ADAPTERS = {"alpha": {"seed": 1}, "beta": {"seed": 2}, "gamma": {"seed": 3}, "ia3": {"seed": 4, "kind": "ia3"},
            "soft": {"seed": 5, "kind": "prompt"}}
QUESTIONS = ["hello world", "how are you", "the price is 189 dollars", "yes no maybe", "what is the warranty"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    return serve_workspace(tmp_path_factory.mktemp("serve") / "ws", tiny_model_dir, ADAPTERS)


@pytest.fixture(scope="module")
def server(workspace):
    from tunewright.serve.server import build_state

    state = build_state(workspace)
    with running_server(state) as url:
        yield url, state


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


def isolated_answer(workspace, adapter: str | None, question: str, max_tokens: int = 12) -> str:
    """What a process that loaded only this adapter, through plain peft, answers (greedy)."""
    from peft import PeftModel

    from tunewright.models.generation import generate_responses
    from tunewright.models import load_model, load_tokenizer, prepare_base_model

    base = prepare_base_model(workspace.recipe.base_model)
    model = load_model(base)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, workspace.root / "adapters" / adapter).eval()
    tokenizer = load_tokenizer(base, padding_side="left")
    return generate_responses(model, tokenizer, [[{"role": "user", "content": question}]], max_new_tokens=max_tokens,
                              batch_size=1)[0]


def ask(client, model: str, question: str, **kwargs) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                           max_tokens=kwargs.pop("max_tokens", 12), **kwargs)
    return reply.choices[0].message.content


def test_models_lists_base_adapters_and_base_name(client, workspace):
    ids = {m.id for m in client.models.list()}
    assert {"base", workspace.recipe.base_model, *ADAPTERS} <= ids


def test_chat_answer_and_usage_match_an_isolated_process(client, workspace):
    reply = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hello world"}],
                                           max_tokens=12)
    assert reply.object == "chat.completion" and reply.model == "alpha"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 0
    assert reply.choices[0].message.content.strip() == isolated_answer(workspace, "alpha", "hello world")


def test_streaming_yields_the_same_text_in_pieces(client):
    whole = ask(client, "beta", "how are you", max_tokens=16)
    stream = client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "how are you"}],
                                            max_tokens=16, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == whole
    assert len(pieces) > 1  # streamed, not one block at the end
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals and finals[-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= len(pieces)


def test_completions_endpoint_continues_raw_text(client):
    reply = client.completions.create(model="gamma", prompt="hello world", max_tokens=8)
    assert reply.object == "text_completion"
    assert reply.usage.completion_tokens <= 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="gamma", prompt="hello world", max_tokens=8, stream=True) if c.choices)
    assert streamed == reply.choices[0].text


def test_stop_string_ends_the_answer_before_it(client):
    full = ask(client, "alpha", "hello world", max_tokens=16)
    assert len(full) > 3
    cut = full[2:4]
    stopped = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hello world"}],
                                             max_tokens=16, stop=[cut])
    assert stopped.choices[0].message.content == full[: full.index(cut)]
    assert stopped.choices[0].finish_reason == "stop"


def test_mixed_concurrent_load_answers_equal_isolated_processes(client, workspace):
    """Every request answered, and each adapter's answer under mixed load equals the answer of a
    process that loaded only that adapter (LoRA rows share batches; IA3 and prompt tuning do not)."""
    models = ["base", *ADAPTERS]
    jobs = [(models[i % len(models)], QUESTIONS[i % len(QUESTIONS)]) for i in range(30)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda job: ask(client, *job), jobs))
    assert len(answers) == len(jobs) and all(isinstance(a, str) for a in answers)
    expected = {}
    for (model, question), answer in zip(jobs, answers):
        key = (model, question)
        if key not in expected:
            expected[key] = isolated_answer(workspace, None if model == "base" else model, question)
        assert answer.strip() == expected[key], (model, question)  # the batch tool strips; the API does not
    # The adapters really differ from each other: switching mistakes would show.
    assert len({expected[(m, "hello world")] for m in models if (m, "hello world") in expected}) > 1


def test_errors_are_openai_shaped_and_clear(client, server):
    url, state = server
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        ask(client, "nope", "hi")
    with pytest.raises(openai.BadRequestError, match="max_tokens must be at least 1"):
        ask(client, "alpha", "hi", max_tokens=-3)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        ask(client, "alpha", "hello " * 600)
    with pytest.raises(openai.BadRequestError, match="over this server's limit"):
        ask(client, "alpha", "hi", max_tokens=state.spec.max_tokens_limit + 1)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        ask(client, "alpha", "hi", temperature=5)
    bad = httpx.post(url + "/v1/chat/completions", content=b'{"model": "alpha", "messages": [', timeout=10,
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    huge = httpx.post(url + "/v1/completions", json={"model": "alpha", "prompt": "x" * (state.spec.max_request_bytes + 10)},
                      timeout=10)
    assert huge.status_code == 413
    no_messages = httpx.post(url + "/v1/chat/completions", json={"model": "alpha", "messages": []}, timeout=10)
    assert no_messages.status_code == 400 and no_messages.json()["error"]["param"] == "messages"
    assert ask(client, "alpha", "hello world")  # and it still serves


def test_metrics_count_requests_per_model_and_queue_depth(client, server):
    ask(client, "gamma", "yes no maybe")
    text = httpx.get(server[0] + "/metrics", timeout=10).text
    assert 'tunewright_requests_total{model="gamma",status="200"}' in text
    assert "tunewright_queue_depth 0.0" in text
    assert 'tunewright_generated_tokens_total{model="gamma"}' in text
    assert "tunewright_request_latency_seconds_bucket" in text and "tunewright_tokens_per_second" in text


def test_disconnect_mid_stream_frees_the_slot(server, client):
    url, state = server
    before = state.metrics.tokens.labels("alpha")._value.get()
    with httpx.stream("POST", url + "/v1/chat/completions", timeout=30, json={
            "model": "alpha", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 400,
            "stream": True}) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
    # The cancelled row stops at its next token: the engine empties and the next request is served.
    for _ in range(200):
        if state.engine.in_flight == 0:
            break
        threading.Event().wait(0.05)
    assert state.engine.in_flight == 0
    reason, tokens = next((r, n) for rid, r, n in state.engine.recent if rid == request_id)
    assert reason == "cancelled" and tokens < 400
    assert ask(client, "beta", "hello world")
    assert state.metrics.tokens.labels("alpha")._value.get() == before  # the abandoned stream is not counted as served


def test_feedback_down_with_correction_reaches_the_review_queue(server, client, workspace):
    from tunewright.review.store import ReviewStore

    reply = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "what is the price"}],
                                           max_tokens=8)
    up = httpx.post(server[0] + "/v1/feedback", json={"request_id": reply.id, "rating": "up"}, timeout=10).json()
    assert up["review_candidate_id"] is None
    down = httpx.post(server[0] + "/v1/feedback", timeout=10, json={
        "request_id": reply.id, "rating": "down", "correction": "It costs $189. Mail me at jo@example.com"}).json()
    candidate = ReviewStore(workspace.registry).get(down["review_candidate_id"])
    assert candidate.queue == "feedback" and candidate.status == "pending"
    assert candidate.messages[-1]["content"] == "It costs $189. Mail me at [EMAIL]"  # redacted
    assert candidate.provenance["served_response"] == reply.choices[0].message.content
    unknown = httpx.post(server[0] + "/v1/feedback", json={"request_id": "chatcmpl-x", "rating": "down"}, timeout=10)
    assert unknown.status_code == 404
    bad = httpx.post(server[0] + "/v1/feedback", json={"request_id": reply.id, "rating": "meh"}, timeout=10)
    assert bad.status_code == 400
    actions = [e.action for e in workspace.registry.events()]
    assert actions.count("serve.feedback") == 2


def test_batch_modes_agree_with_peft_mixed_batches_and_restore_weights(workspace):
    """Base rows with adapters off, one adapter on merged buffers, or a real mix: same logits as
    peft's mixed path, and the base weights are bit-identical afterwards."""
    import torch

    from tunewright.models import load_model, load_tokenizer, prepare_base_model
    from tunewright.serve.pool import PEFT_BASE, AdapterPool

    base = prepare_base_model(workspace.recipe.base_model)
    pool = AdapterPool(base, load_model(base))
    for name in ("alpha", "beta"):
        pool.load(name, workspace.root / "adapters" / name)
    tokenizer = load_tokenizer(base, padding_side="left")
    batch = tokenizer(["hello world how are you", "the price is 189"], return_tensors="pt", padding=True)
    model = pool.shared.model
    before = {k: v.clone() for k, v in model.state_dict().items() if "base_layer" in k}
    for names in ([PEFT_BASE, PEFT_BASE], ["alpha", "alpha"], ["beta", "beta"], ["alpha", "beta"], ["alpha", "alpha"]):
        with torch.inference_mode():
            expected = model(**batch, adapter_names=names).logits
            with pool.batch_mode(pool.shared, names) as adapter_names:
                got = model(**batch, **({"adapter_names": adapter_names} if adapter_names else {})).logits
        assert torch.allclose(got, expected, atol=1e-4), (names, (got - expected).abs().max())
        if len(set(names)) == 1 and names[0] != PEFT_BASE:
            assert adapter_names is None and pool._merged_name == names[0]
    after = {k: v for k, v in model.state_dict().items() if "base_layer" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
