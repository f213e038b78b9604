"""The data spec: typed, and impossible or unknown settings fail before any teacher call."""

import pytest

from tunewright.config import load_recipe
from tunewright.errors import TunewrightError
from tunewright.synth.rounds import check_plugins

GOOD = """name: support
synth:
  task: Answer customer questions about orders
  audience: online shoppers
  tone: friendly, brief
  target: 100
  topics:
    - name: returns
      target: 40
      subtopics:
        - {name: footwear, target: 10}
    - name: shipping
      target: 30
  personas:
    - {name: angry, description: an angry customer whose parcel is late}
  scenarios:
    - {name: late parcel, description: the order has not arrived, personas: [angry], turns: 3}
  output: {kind: dialogue}
  seeds:
    - {question: "How long do returns take?", answer: "Five business days.", topic: returns}
  teacher: {kind: openai-compatible, settings: {base_url: "http://127.0.0.1:8000/v1", model: m}}
"""


def _load(tmp_path, text):
    path = tmp_path / "tunewright.yaml"
    path.write_text(text)
    return load_recipe(path)


def test_a_full_spec_loads(tmp_path):
    spec = _load(tmp_path, GOOD).synth
    assert spec.target == 100 and spec.topics[0].subtopics[0].name == "footwear"
    assert spec.scenarios[0].turns == 3 and spec.output.kind == "dialogue"
    check_plugins(spec)  # teacher and default filters are all registered


@pytest.mark.parametrize(
    "change, field, message",
    [
        (("target: 100", "target: 50"), "synth", "topics want 70 rows but target is 50"),
        (("target: 10}", "target: 50}"), "synth.topics.0", "subtopics of 'returns' want 50 rows"),
        (("personas: [angry]", "personas: [calm]"), "synth", "unknown personas: calm"),
        (("topic: returns}", "topic: billing}"), "synth", "unknown topic 'billing'"),
        (("output: {kind: dialogue}", "output: {kind: json}"), "synth.output", "needs a json_schema"),
        (("tone: friendly, brief", "tone: friendly\n  tonne: brief"), "synth.tonne", "unknown field"),
        (("turns: 3", "turns: 0"), "synth.scenarios.0.turns", "greater than or equal to 1"),
    ],
)
def test_impossible_or_unknown_settings_name_the_field(tmp_path, change, field, message):
    with pytest.raises(TunewrightError) as info:
        _load(tmp_path, GOOD.replace(*change))
    text = str(info.value)
    assert f"field '{field}'" in text and message in text and "tunewright.yaml:" in text


def test_bad_json_schema_and_unknown_plugins(tmp_path):
    with pytest.raises(TunewrightError, match="not a valid JSON Schema"):
        _load(tmp_path, GOOD.replace("output: {kind: dialogue}", "output: {kind: json, json_schema: {type: 12}}"))
    spec = _load(tmp_path, GOOD.replace("kind: openai-compatible", "kind: carrier-pigeon")).synth
    with pytest.raises(TunewrightError, match="unknown teacher 'carrier-pigeon'"):
        check_plugins(spec)
