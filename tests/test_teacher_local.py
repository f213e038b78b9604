"""The offline teacher: a local transformers model, cached, accounted, deterministic by seed."""

from tunewright.synth.teachers import TEACHERS, CallCache, LocalTeacherSpec, LocalTransformersTeacher, TeacherRequest


def _requests(seed=1):
    return [TeacherRequest.chat([{"role": "user", "content": f"Write a question about item {i}"}],
                                temperature=0.8, max_tokens=8, seed=seed) for i in range(3)]


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


def test_same_seed_same_text_without_cache(tiny_model_dir):
    spec = LocalTeacherSpec(model=str(tiny_model_dir))
    a = [c.text for c in LocalTransformersTeacher(spec).complete_many(_requests(seed=5))]
    b = [c.text for c in LocalTransformersTeacher(spec).complete_many(_requests(seed=5))]
    assert a == b


def test_local_teacher_is_registered():
    assert TEACHERS.get_class("local-transformers") is LocalTransformersTeacher
