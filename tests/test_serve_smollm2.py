"""The real path: SmolLM2 with a trained adapter behind `tunewright serve`, asked by the openai client."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from helpers import qa_rows
from serve_helpers import running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tunewright.config import Recipe, TrainSpec
    from tunewright.io import sha256_file
    from tunewright.models import prepare_base_model
    from tunewright.serve.server import build_state
    from tunewright.train.loop import train_adapter
    from tunewright.workspace import Workspace

    root = tmp_path_factory.mktemp("serve-smollm2")
    workspace = Workspace.init(root / "ws", Recipe(name="shop"))
    base = prepare_base_model("smollm2-135m-instruct")
    spec = TrainSpec(r=8, alpha=16, learning_rate=2e-3, batch_size=4, max_steps=8, checkpoint_every=100, seed=0)
    adapter = workspace.root / "adapters" / "shop"
    train_adapter(base=base, rows=qa_rows(12), spec=spec, run_dir=root / "run", adapter_dir=adapter)
    workspace.registry.add_adapter(name="shop", path=str(adapter), method="lora", run_id=None,
                                   weights_sha256=sha256_file(adapter / "adapter_model.safetensors"),
                                   base_model_ref=base.ref, base_model_sha256=base.sha256)
    state = build_state(workspace)
    with running_server(state) as url:
        yield workspace, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_base_and_adapter_side_by_side_match_isolated_processes(served):
    from peft import PeftModel

    from tunewright.models.generation import generate_responses
    from tunewright.models import load_model, load_tokenizer, prepare_base_model

    workspace, client = served
    assert {"base", "smollm2-135m-instruct", "shop"} <= {m.id for m in client.models.list()}
    questions = ["How much does item 3 cost?", "What is the price of item 7?", "What is your return window?"]
    jobs = [(model, q) for q in questions for model in ("base", "shop")]
    with ThreadPoolExecutor(6) as pool:  # both models at once: one mixed batch
        answers = list(pool.map(lambda job: client.chat.completions.create(
            model=job[0], messages=[{"role": "user", "content": job[1]}], max_tokens=24), jobs))
    base = prepare_base_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(base, padding_side="left")
    plain = load_model(base)
    tuned = PeftModel.from_pretrained(load_model(base), workspace.root / "adapters" / "shop").eval()
    for (model, question), reply in zip(jobs, answers):
        reference = generate_responses(tuned if model == "shop" else plain, tokenizer,
                                       [[{"role": "user", "content": question}]], max_new_tokens=24, batch_size=1)[0]
        assert reply.choices[0].message.content.strip() == reference, (model, question)
    by_model = {(m, q): r.choices[0].message.content for (m, q), r in zip(jobs, answers)}
    assert any(by_model[("base", q)] != by_model[("shop", q)] for q in questions)  # the adapter changed answers
    stopped = [r.choices[0].finish_reason for r in answers]
    assert "stop" in stopped  # SmolLM2 ends its turn with <|im_end|>, and the server stops there


def test_streaming_on_the_real_model(served):
    _, client = served
    stream = client.chat.completions.create(model="shop", messages=[{"role": "user", "content": "How much does item 3 cost?"}],
                                            max_tokens=24, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    whole = client.chat.completions.create(model="shop", messages=[{"role": "user", "content": "How much does item 3 cost?"}],
                                           max_tokens=24).choices[0].message.content
    assert text == whole and "<|im_end|>" not in text
