"""Teacher-driven generators: provenance, reproducible requests, failures as data, and each
generator's own checks, against a scripted in-process teacher (and one real HTTP round trip)."""

from __future__ import annotations

import hashlib
import json
import random
import re

import pytest
from pydantic import ValidationError

from tunewright.config.synth import SynthSpec
from tunewright.data.schema import ChatRow
from tunewright.synth.chunking import Chunk
from tunewright.synth.generators import SYNTH_GENERATORS, GenerationContext, Guidance
from tunewright.synth.generators.common import as_items, json_values, topic_batches
from tunewright.synth.generators.evol_instruct import OPERATIONS
from tunewright.synth.teachers import (CallCache, Completion, LocalTeacherSpec, LocalTransformersTeacher,
                                       OpenAICompatibleSpec, OpenAICompatibleTeacher, TeacherError, TeacherRequest)

from scripted_openai import ScriptedServer

PRE_QUERY = "<|im_start|>user\n"
SETTINGS = {"magpie": {"pre_query_template": PRE_QUERY}}  # no tokenizer model needed
CHUNKS = [
    Chunk("tents.md", 0, "The Ridgeback 2 tent costs 189 dollars and weighs 2.1 kilograms.", "Tents", 1, 1),
    Chunk("lights.md", 0, "The Aurora headlamp shines 300 lumens and carries a 2 year warranty.", "Lights", 1, 1),
]
PROVENANCE_KEYS = {"generator", "teacher_model", "template_sha256", "params", "round", "parents"}


def spec(**changes) -> SynthSpec:
    data = {
        "task": "Answer customer questions about camping gear sold by the Trailhead shop.",
        "audience": "first-time campers", "tone": "friendly", "style_rules": ["Use metric units."],
        "target": 100,
        "topics": [{"name": "tents", "target": 10, "subtopics": [{"name": "pitching", "target": 5}]},
                   {"name": "lights", "target": 5}],
        "personas": [{"name": "novice", "description": "never camped before"},
                     {"name": "expert", "description": "a mountain guide"}],
        "scenarios": [{"name": "storm", "description": "a storm is forecast", "turns": 2},
                      {"name": "return", "description": "wants to return a tent", "personas": ["novice"], "turns": 1}],
        "constraints": {"forbidden": ["cheap"], "language": "en", "max_answer_chars": 600},
        **changes,
    }
    return SynthSpec.model_validate(data)


def qa(question, answer, **meta) -> ChatRow:
    return ChatRow(messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                   meta=meta)


SEEDS = [qa(f"Seed question number {i} about tents?", f"Seed answer {i}.", id=f"seed-{i}",
            topic="tents" if i % 2 else "lights") for i in range(4)]
ACCEPTED = [qa(f"Machine question number {i} about lights?", f"Machine answer {i}.", id=f"cand-{i}",
               provenance={"topic": "lights"}) for i in range(4)]


def _n(pattern, prompt):
    return int(re.search(pattern, prompt).group(1))


def scripted(request: TeacherRequest) -> str:
    """A plausible reply for whichever generator's prompt this is."""
    if request.prompt is not None:  # Magpie's raw pre-query prompt
        return "How do I keep my tent dry in heavy rain?<|im_end|>\n<|im_start|>assistant\nUse the fly."
    if request.messages[0][0] == "system":  # Magpie's answer call
        return "Pitch the tent on high ground and use its rain fly."
    prompt = request.messages[-1][1]
    if "#Given Prompt#" in prompt:
        return json.dumps({"question": "Which two-person shelter under 200 dollars survives storms at 2000 m?",
                           "answer": "The Ridgeback 2, at 189 dollars."})
    if "paraphrases of the question" in prompt:
        n = _n(r"Write (\d+) paraphrases", prompt)
        return json.dumps([f"Could you tell me variant {i} of this?" for i in range(n)])
    if "Write one conversation" in prompt:
        turns = []
        for i in range(_n(r"exactly (\d+) user turns", prompt)):
            turns += [{"role": "user", "content": f"User turn {i}?"}, {"role": "assistant", "content": f"Reply {i}."}]
        return "Here you go:\n" + json.dumps(turns)
    if "Passage (from" in prompt:
        passage = next(c.text for c in CHUNKS if c.text in prompt)
        pairs = [{"question": f"What does the passage's product offer ({i})?", "answer": passage}
                 for i in range(_n(r"Write (\d+) question", prompt))]
        return "```json\n" + json.dumps(pairs) + "\n```"
    n = _n(r"Write (\d+) new", prompt)
    return "Sure!\n" + json.dumps([{"question": f"New question {i}?", "answer": f"New answer {i}."} for i in range(n)])


class FakeTeacher:
    def __init__(self, script=scripted):
        self.model, self.script, self.requests = "fake", script, []

    def complete(self, request):
        [result] = self.complete_many([request])
        if isinstance(result, TeacherError):
            raise result
        return result

    def complete_many(self, requests):
        self.requests += requests
        out = []
        for request in requests:
            reply = self.script(request)
            out.append(reply if isinstance(reply, TeacherError) else Completion(reply, self.model, 1, 1))
        return out

    def prompts(self):
        return [r.messages[-1][1] if r.prompt is None else r.prompt for r in self.requests]


def ctx(teacher, seed=7, **changes) -> GenerationContext:
    fields = {"spec": spec(), "teacher": teacher, "round": 3, "rng": random.Random(seed), "seeds": list(SEEDS),
              "accepted": list(ACCEPTED), "chunks": list(CHUNKS), **changes}
    return GenerationContext(**fields)


def make(name, **settings):
    cls = SYNTH_GENERATORS.get_class(name)
    return cls(cls.Settings(**{**SETTINGS.get(name, {}), **settings}))


ALL = SYNTH_GENERATORS.names()


def test_every_generator_is_registered():
    assert ALL == ["evol-instruct", "grounded-chunks", "magpie", "paraphrase", "persona-dialogue", "self-instruct"]


@pytest.mark.parametrize("name", ALL)
def test_rows_carry_full_provenance(name):
    teacher = FakeTeacher()
    produced = make(name).generate(ctx(teacher, system_prompt="You are Trailhead's assistant."), 4)
    assert produced.failures == [] and 1 <= len(produced.rows) <= 4
    defaults = SYNTH_GENERATORS.get_class(name).Settings(**SETTINGS.get(name, {})).model_dump(mode="json")
    for row in produced.rows:
        prov = row.meta["provenance"]
        assert PROVENANCE_KEYS <= prov.keys()
        assert (prov["generator"], prov["teacher_model"], prov["round"]) == (name, "fake", 3)
        assert prov["params"].items() >= defaults.items() and "seed" in str(prov["params"])
        assert row.messages[0].role == "system" and row.messages[0].content == "You are Trailhead's assistant."


@pytest.mark.parametrize("name", ALL)
def test_same_rng_seed_same_requests(name):
    first, second, other = FakeTeacher(), FakeTeacher(), FakeTeacher()
    rows_a = make(name).generate(ctx(first, seed=11), 5).rows
    rows_b = make(name).generate(ctx(second, seed=11), 5).rows
    make(name).generate(ctx(other, seed=12), 5)
    assert first.requests and first.requests == second.requests
    assert [r.to_json() for r in rows_a] == [r.to_json() for r in rows_b]
    assert all(r.seed is not None for r in first.requests)
    assert [r.seed for r in first.requests] != [r.seed for r in other.requests]


@pytest.mark.parametrize("name", ALL)
def test_teacher_errors_become_failures(name):
    dead = FakeTeacher(lambda request: TeacherError("timeout", "no answer within 60 s"))
    produced = make(name).generate(ctx(dead), 4)
    assert produced.rows == [] and produced.failures
    assert {(f.generator, f.kind) for f in produced.failures} == {(name, "timeout")}

    calls = []

    def first_fails(request):
        calls.append(request)
        return TeacherError("http", "status 500") if len(calls) == 1 else scripted(request)

    produced = make(name).generate(ctx(FakeTeacher(first_fails)), 6)
    assert produced.rows and [f.kind for f in produced.failures] == ["http"]


@pytest.mark.parametrize("name", ALL)
def test_unknown_setting_is_a_validation_error(name):
    with pytest.raises(ValidationError, match="no_such_setting"):
        SYNTH_GENERATORS.get_class(name).Settings(no_such_setting=1)


@pytest.mark.parametrize("name", ALL)
def test_prompts_carry_spec_and_guidance(name):
    teacher = FakeTeacher()
    make(name).generate(ctx(teacher), 3)
    chat = [p for r, p in zip(teacher.requests, teacher.prompts()) if r.prompt is None]
    assert chat and all("Reviewers" not in p for p in chat)

    teacher = FakeTeacher()
    guidance = Guidance(notes=["answers were too vague"])
    make(name).generate(ctx(teacher, guidance=guidance), 3)
    chat = [r.messages[0][1] if name == "magpie" else r.messages[-1][1] for r in teacher.requests if r.prompt is None]
    assert chat
    for prompt in chat:
        assert "- answers were too vague" in prompt and "Task: Answer customer questions" in prompt
        assert '"cheap"' in prompt and "Write in this language: en." in prompt and "Use metric units." in prompt


def test_topics_are_allocated_by_target_and_told_to_the_teacher():
    batches = topic_batches(ctx(FakeTeacher()), 12, 3)
    per_topic = {}
    for topic, n in batches:
        assert n <= 3
        per_topic[topic] = per_topic.get(topic, 0) + n
    # tents (10) splits into its subtopic pitching (5) and itself (the other 5); lights wants 5.
    assert per_topic == {"tents > pitching": 4, "tents": 4, "lights": 4}
    plain = topic_batches(ctx(FakeTeacher(), spec=spec(topics=[], seeds=[])), 5, 2)
    assert sorted(plain, key=lambda b: b[1]) == [(None, 1), (None, 2), (None, 2)]

    teacher = FakeTeacher()
    rows = make("self-instruct", new_per_prompt=2).generate(ctx(teacher), 6).rows
    topics = [r.meta["provenance"]["topic"] for r in rows]
    assert sorted(topics) == ["lights", "lights", "tents", "tents", "tents > pitching", "tents > pitching"]
    assert any("Topic: tents > pitching." in p for p in teacher.prompts())


def test_no_topics_means_no_topic():
    teacher = FakeTeacher()
    rows = make("self-instruct").generate(ctx(teacher, spec=spec(topics=[], seeds=[])), 3).rows
    assert rows and all("topic" not in r.meta["provenance"] for r in rows)
    assert all("Topic:" not in p for p in teacher.prompts())


def test_tolerant_json_reading():
    chatter = 'I made [2] of them:\n```json\n[{"question": "a?", "answer": "b"}]\n```\nEnjoy!'
    assert next(i for v in json_values(chatter) if (i := as_items(v, dict))) == [{"question": "a?", "answer": "b"}]
    loose = 'Sure [1] here: {"question": "x?", "answer": "y"} done'
    assert next(i for v in json_values(loose) if (i := as_items(v, dict))) == [{"question": "x?", "answer": "y"}]
    assert as_items({"pairs": [{"question": "q"}]}, dict) == [{"question": "q"}]
    assert as_items({"paraphrases": ["a", "b", 3]}, str) == ["a", "b"]


def test_self_instruct_mixes_seeds_and_accepted_rows_and_records_parents():
    teacher = FakeTeacher()
    rows = make("self-instruct", examples_per_prompt=4, machine_share=0.5, new_per_prompt=2).generate(
        ctx(teacher, spec=spec(topics=[])), 4).rows
    for request in teacher.requests:
        prompt = request.messages[-1][1]
        assert prompt.count("Seed question number") == 2 and prompt.count("Machine question number") == 2
    questions = {r.meta["id"]: r.messages[0].content for r in SEEDS + ACCEPTED}
    assert len(rows) == 4
    for index, row in enumerate(rows):  # two rows per prompt, in request order
        parents = row.meta["provenance"]["parents"]
        assert sorted(p.split("-")[0] for p in parents) == ["cand", "cand", "seed", "seed"]
        assert all(questions[p] in teacher.prompts()[index // 2] for p in parents)
    # Too few machine rows: the seeds fill the examples up, and the other way round.
    teacher = FakeTeacher()
    make("self-instruct", machine_share=1.0, new_per_prompt=4).generate(ctx(teacher, accepted=ACCEPTED[:1]), 4)
    assert all(p.count("Machine question") == 1 and p.count("Seed question") == 3 for p in teacher.prompts())
    teacher = FakeTeacher()
    make("self-instruct", new_per_prompt=4).generate(ctx(teacher, seeds=[]), 4)
    assert all(p.count("Machine question") == 4 for p in teacher.prompts())


def _evol_reply(question):
    return lambda request: json.dumps({"question": question, "answer": "An answer."})


@pytest.mark.parametrize("rewrite, reason", [
    ("Seed question number 0 about tents?", "same question"),
    ("seed QUESTION number 0, about tents", "same question"),
    ("#Rewritten Prompt#: Which tent is warmest?", "leaks"),
    ("Rewritten: which tent is the warmest in winter?", "leaks"),
    ("Which tent? Add one more constraint or requirement to the question.", "leaks"),
])
def test_evol_rejects_unchanged_and_leaking_rewrites(rewrite, reason):
    one_seed = [SEEDS[0]]
    produced = make("evol-instruct", operations=["add-constraints"]).generate(
        ctx(FakeTeacher(_evol_reply(rewrite)), seeds=one_seed, accepted=[]), 2)
    assert produced.rows == [] and len(produced.failures) == 2
    assert all(f.kind == "rejected" and reason in f.message for f in produced.failures)


def test_evol_rejects_near_copies_by_word_overlap_and_records_the_operation():
    long_seed = qa("How do I pitch the Ridgeback 2 tent on sandy ground in strong coastal wind?", "Use sand pegs.",
                   id="seed-9")
    near = "How do I pitch the Ridgeback 2 tent on sandy ground in strong coastal wind quickly?"
    produced = make("evol-instruct", max_overlap=0.9).generate(
        ctx(FakeTeacher(_evol_reply(near)), seeds=[long_seed], accepted=[]), 1)
    assert produced.rows == [] and "barely changed" in produced.failures[0].message
    produced = make("evol-instruct", max_overlap=0.95).generate(
        ctx(FakeTeacher(_evol_reply(near)), seeds=[long_seed], accepted=[]), 1)
    assert len(produced.rows) == 1

    teacher = FakeTeacher()
    rows = make("evol-instruct", operations=["concretise", "breadth"]).generate(ctx(teacher), 8).rows
    assert len(rows) == 8
    for row, prompt in zip(rows, teacher.prompts()):
        params = row.meta["provenance"]["params"]
        assert params["operation"] in {"concretise", "breadth"} and OPERATIONS[params["operation"]][1] in prompt
        assert params["direction"] == OPERATIONS[params["operation"]][0]
        assert row.meta["provenance"]["parents"][0] in {r.meta["id"] for r in SEEDS + ACCEPTED}
    assert {r.meta["provenance"]["params"]["operation"] for r in rows} == {"concretise", "breadth"}


def test_magpie_sends_only_the_user_header_and_trims_the_question():
    teacher = FakeTeacher()
    rows = make("magpie").generate(ctx(teacher), 3).rows
    raw = [r for r in teacher.requests if r.prompt is not None]
    assert len(raw) == 3 and all(r.prompt == PRE_QUERY and r.messages == () for r in raw)
    assert len({r.seed for r in raw}) == 3  # same prompt, so only distinct seeds keep the calls apart
    answers = [r for r in teacher.requests if r.prompt is None]
    assert [m[1] for m in answers[0].messages][1] == "How do I keep my tent dry in heavy rain?"
    assert rows[0].messages[0].content == "How do I keep my tent dry in heavy rain?"
    assert rows[0].answer == "Pitch the tent on high ground and use its rain fly."
    assert "topic" not in rows[0].meta["provenance"]

    def short(request):
        return "Hi<|im_end|>" if request.prompt is not None else "An answer."

    produced = make("magpie").generate(ctx(FakeTeacher(short)), 2)
    assert produced.rows == [] and [f.kind for f in produced.failures] == ["rejected", "rejected"]


def test_magpie_derives_the_header_from_a_tokenizer(tiny_model_dir):
    teacher = FakeTeacher()
    magpie = make("magpie", pre_query_template=None, tokenizer=str(tiny_model_dir), stop_markers=[])
    rows = magpie.generate(ctx(teacher), 1).rows
    # The template's default system turn is part of the header, exactly as the model would see it.
    default_system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert teacher.requests[0].prompt == default_system + "<|im_start|>user\n"
    assert rows[0].messages[0].content == "How do I keep my tent dry in heavy rain?"  # cut at the template's <|im_end|>

    teacher = FakeTeacher()
    rows = magpie.generate(ctx(teacher, system_prompt="Be brief."), 1).rows
    assert teacher.requests[0].prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    assert [m.role for m in rows[0].messages] == ["system", "user", "assistant"]


def test_magpie_over_http_uses_raw_completions_and_reruns_from_cache(tmp_path):
    script = [("answer", "What size tent fits four people?<|im_end|>\n<|im_start|>assistant\nA big one"),
              ("answer", "A four-person tent such as the Ridgeback 4.")]
    spec_ = OpenAICompatibleSpec(base_url="", model="teacher-1", backoff_s=0.0, max_retries=0, concurrency=1)
    with ScriptedServer(script) as server:
        teacher = OpenAICompatibleTeacher(spec_.model_copy(update={"base_url": server.url}), CallCache(tmp_path))
        rows = make("magpie").generate(ctx(teacher), 1).rows
    ask, answer = server.requests
    assert ask["path"] == "/v1/completions" and "messages" not in ask["body"]
    assert ask["body"]["prompt"] == PRE_QUERY and isinstance(ask["body"]["seed"], int)
    assert answer["path"] == "/v1/chat/completions"
    assert answer["body"]["messages"][-1] == {"role": "user", "content": "What size tent fits four people?"}
    assert rows[0].answer == "A four-person tent such as the Ridgeback 4."
    assert rows[0].meta["provenance"]["teacher_model"] == "teacher-1"

    with ScriptedServer() as server:
        again = OpenAICompatibleTeacher(spec_.model_copy(update={"base_url": server.url}), CallCache(tmp_path))
        rerun = make("magpie").generate(ctx(again), 1).rows
    assert server.requests == [] and again.usage.cached_calls == 2  # same seed, same requests: nothing paid twice
    assert [r.to_json() for r in rerun] == [r.to_json() for r in rows]


def test_chat_cache_keys_are_unchanged_by_raw_prompt_support():
    request = TeacherRequest.chat([{"role": "user", "content": "hi"}], temperature=0.0, max_tokens=8, seed=3)
    before = {"model": "m", "messages": [["user", "hi"]], "temperature": 0.0, "max_tokens": 8, "seed": 3}
    expected = hashlib.sha256(json.dumps(before, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert request.cache_key("m") == expected
    assert TeacherRequest.raw("hi", temperature=0.0, max_tokens=8, seed=3).cache_key("m") != expected
    with pytest.raises(ValueError, match="messages or a raw prompt"):
        TeacherRequest()


def test_local_teacher_continues_a_raw_prompt_without_the_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    teacher = LocalTransformersTeacher(LocalTeacherSpec(model=str(tiny_model_dir)))
    raw = "<|im_start|>user\n"
    # Sampled: greedy decoding of this random tiny model ends the turn at once, which reads as empty.
    result = teacher.complete(TeacherRequest.raw(raw, temperature=0.9, max_tokens=6, seed=1))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    wrapped = tokenizer.apply_chat_template([{"role": "user", "content": raw}], tokenize=False,
                                            add_generation_prompt=True)
    assert result.text and result.prompt_tokens == len(tokenizer(raw, add_special_tokens=False)["input_ids"]) == 3
    assert result.prompt_tokens < len(tokenizer(wrapped, add_special_tokens=False)["input_ids"])


def test_paraphrase_drops_copies_and_keeps_the_answer():
    parent = qa("How much does the Ridgeback 2 tent cost?", "It costs 189 dollars.", id="seed-0")
    parent = parent.model_copy(update={"reference": "189 dollars"})
    replies = json.dumps(["how much does the Ridgeback 2 tent cost", "What's the price of the Ridgeback 2?",
                          "what's the price of the ridgeback 2", "Ridgeback 2 tent: what do I pay?"])
    produced = make("paraphrase", paraphrases_per_row=4).generate(
        ctx(FakeTeacher(lambda r: replies), seeds=[parent], accepted=[], spec=spec(topics=[])), 4)
    assert [r.messages[0].content for r in produced.rows] == ["What's the price of the Ridgeback 2?",
                                                              "Ridgeback 2 tent: what do I pay?"]
    assert all(r.answer == "It costs 189 dollars." and r.reference == "189 dollars" for r in produced.rows)
    assert all(r.meta["provenance"]["parents"] == ["seed-0"] for r in produced.rows)
    assert [f.kind for f in produced.failures] == ["rejected", "rejected"]


def _dialogue(*roles):
    return lambda request: json.dumps([{"role": role, "content": f"turn {i}"} for i, role in enumerate(roles)])


def test_persona_dialogue_follows_scenarios_and_personas():
    teacher = FakeTeacher()
    one_scenario = spec(scenarios=[{"name": "return", "description": "wants to return a tent",
                                    "personas": ["novice"], "turns": 3}])
    rows = make("persona-dialogue").generate(ctx(teacher, spec=one_scenario), 4).rows
    assert len(rows) == 4
    for row in rows:
        prov = row.meta["provenance"]
        assert (prov["persona"], prov["scenario"]) == ("novice", "return")
        assert [m.role for m in row.messages] == ["user", "assistant"] * 3
    assert all("never camped before" in p and "exactly 3 user turns" in p for p in teacher.prompts())


@pytest.mark.parametrize("roles", [
    ("user", "assistant"),  # one user turn short
    ("assistant", "user", "assistant", "user"),
    ("user", "user", "assistant", "assistant"),
    ("user", "assistant", "user", "assistant", "user"),
])
def test_persona_dialogue_rejects_broken_turns(roles):
    storm = spec(scenarios=[{"name": "storm", "description": "a storm is forecast", "turns": 2}])
    produced = make("persona-dialogue").generate(ctx(FakeTeacher(_dialogue(*roles)), spec=storm), 2)
    assert produced.rows == [] and [f.kind for f in produced.failures] == ["unparsable", "unparsable"]


def test_grounded_chunks_keep_evidence_and_drop_ungrounded_answers():
    def reply(request):
        return json.dumps([{"question": "What does the Ridgeback 2 tent cost?",
                            "answer": "The Ridgeback 2 costs 189 dollars."},
                           {"question": "Is it good?", "answer": "Bananas grow on tropical plantations."}])

    teacher = FakeTeacher(reply)
    produced = make("grounded-chunks", pairs_per_chunk=2, min_grounding=0.6).generate(
        ctx(teacher, chunks=CHUNKS[:1]), 4)
    assert len(produced.rows) == 2 and len(teacher.requests) == 2
    assert len({r.seed for r in teacher.requests}) == 2  # same chunk twice: two seeds, two cache entries
    assert [f.kind for f in produced.failures] == ["rejected", "rejected"]
    assert "not grounded" in produced.failures[0].message
    source = produced.rows[0].meta["provenance"]["source_chunk"]
    assert source == {"source": "tents.md", "sha256": CHUNKS[0].sha256, "text": CHUNKS[0].text}
    assert CHUNKS[0].text in teacher.prompts()[0]

    teacher = FakeTeacher()
    rows = make("grounded-chunks", pairs_per_chunk=1).generate(ctx(teacher), 4).rows
    used = [r.meta["provenance"]["source_chunk"]["source"] for r in rows]
    assert sorted(used) == ["lights.md", "lights.md", "tents.md", "tents.md"]  # round-robin over chunks


def test_json_output_is_validated_against_the_schema():
    schema = {"type": "object", "properties": {"price": {"type": "number"}}, "required": ["price"]}
    json_spec = spec(output={"kind": "json", "json_schema": schema}, topics=[])

    def reply(request):
        return json.dumps([{"question": "Price of the tent?", "answer": {"price": 189}},
                           {"question": "Price of the lamp?", "answer": {"cost": "cheap"}},
                           {"question": "Price of the mat?", "answer": '{"price": 25}'},
                           {"question": "Price of the pot?", "answer": "about ten"}])

    teacher = FakeTeacher(reply)
    produced = make("self-instruct", new_per_prompt=4).generate(ctx(teacher, spec=json_spec), 4)
    assert [json.loads(r.answer) for r in produced.rows] == [{"price": 189}, {"price": 25}]
    assert [f.kind for f in produced.failures] == ["rejected", "rejected"]
    assert all("JSON schema" in f.message for f in produced.failures)
    assert '"required": [\n    "price"\n  ]' in teacher.prompts()[0]
