"""The offline teacher: a local transformers model, cached, accounted, deterministic by seed."""

import torch

from tunewright.synth.teachers import TEACHERS, CallCache, LocalTeacherSpec, LocalTransformersTeacher, TeacherRequest


def _requests(seed=1, temperature=0.8):
    return [TeacherRequest.chat([{"role": "user", "content": f"Write a question about item {i}"}],
                                temperature=temperature, max_tokens=8, seed=seed) for i in range(3)]


def test_local_teacher_generates_caches_and_counts(tiny_model_dir, tmp_path):
    spec = LocalTeacherSpec(model=str(tiny_model_dir), batch_size=2)
    teacher = LocalTransformersTeacher(spec, CallCache(tmp_path / "cache"))
    first = teacher.complete_many(_requests())
    assert all(c.text and not c.cached for c in first)
    assert teacher.usage.calls == 3 and teacher.usage.prompt_tokens > 0 and teacher.usage.completion_tokens > 0

    again = LocalTransformersTeacher(spec, CallCache(tmp_path / "cache"))
    second = again.complete_many(_requests())
    assert [c.text for c in second] == [c.text for c in first] and all(c.cached for c in second)
    assert again.usage.cached_calls == 3 and again._loaded is None  # nothing loaded, nothing generated


def test_same_seed_same_text_other_seed_other_text_without_cache(tiny_model_dir):
    spec = LocalTeacherSpec(model=str(tiny_model_dir))
    teacher = LocalTransformersTeacher(spec)

    def texts(seed, temperature=0.8):
        # Failures (an empty answer) are results too, and must repeat like texts do.
        return [getattr(c, "text", repr(c)) for c in teacher.complete_many(_requests(seed=seed, temperature=temperature))]

    a = texts(5)
    # A fresh teacher, and the global generator moved in between: only the request's seed may decide.
    torch.manual_seed(1234)
    torch.rand(100)
    assert [c.text for c in LocalTransformersTeacher(spec).complete_many(_requests(seed=5))] == a
    assert texts(5) == a  # the same teacher again, after its own sampling moved the generator
    # A teacher that ignored the seed (or seeded with a constant) would give these the same text.
    others = {seed: texts(seed) for seed in (6, 7, 8)}
    for seed, other in others.items():
        assert sum(x != y for x, y in zip(other, a)) >= 2, (seed, other, a)  # not one lucky request
    assert len({tuple(t) for t in others.values()}) == 3

    # Raw (Magpie) prompts take the other generation path; the seed must decide there too.
    def continued(seed, temperature):
        requests = [TeacherRequest(prompt=f"<|im_start|>user\nWrite a question about item {i}", seed=seed,
                                   temperature=temperature, max_tokens=8) for i in range(3)]
        return [getattr(c, "text", repr(c)) for c in teacher.complete_many(requests)]

    assert continued(5, 0.8) == continued(5, 0.8) != continued(6, 0.8)
    # Greedy decoding draws nothing, so there the seed must not matter (these are real texts, not failures).
    greedy = continued(5, 0.0)
    assert greedy == continued(6, 0.0) and all(not t.startswith("TeacherError") for t in greedy)


def test_local_teacher_is_registered():
    assert TEACHERS.get_class("local-transformers") is LocalTransformersTeacher
