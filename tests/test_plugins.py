"""Every pluggable registry refuses duplicates and bad names, names the recipe field on a miss,
validates settings against the part's typed ``Settings``, and loads third-party parts from entry points."""

import sys
import types
from importlib import metadata

import pytest
from pydantic import BaseModel, ConfigDict

from tunewright.data.normalize import SHAPES
from tunewright.data.readers import READERS
from tunewright.errors import TunewrightError
from tunewright.evaluate.metrics import METRICS
from tunewright.export.formats import EXPORTERS
from tunewright.methods import METHODS
from tunewright.plugins import PluginRegistry
from tunewright.review.interop import FORMATS
from tunewright.synth.base import GENERATORS
from tunewright.synth.filters import FILTERS
from tunewright.synth.generators import SYNTH_GENERATORS
from tunewright.synth.teachers import TEACHERS

REGISTRIES = {"method": (METHODS, "lora", "train.method"), "metric": (METRICS, "contains", "eval.metrics"),
              "builder": (GENERATORS, "grounded-qa", "build.generator"),
              "synth-generator": (SYNTH_GENERATORS, "self-instruct", "synth.generators"),
              "filter": (FILTERS, "length", "synth.filters"), "teacher": (TEACHERS, "openai-compatible", None),
              "shape": (SHAPES, "chat", None), "reader": (READERS, "csv", None),
              "review-format": (FORMATS, "jsonl", "format"), "export-format": (EXPORTERS, "gguf", "formats")}


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_registry_contract(kind):
    registry, builtin, field = REGISTRIES[kind]
    assert builtin in registry.names() and builtin in registry
    assert registry.get_class(builtin).name == builtin
    with pytest.raises(ValueError, match="already registered"):
        registry.register(type("Twin", (), {"name": builtin}))  # a duplicate never silently replaces
    with pytest.raises(ValueError, match="lowercase 'name'"):
        registry.register(type("Bad", (), {"name": "Has Spaces"}))
    with pytest.raises(TunewrightError) as info:
        registry.get("no-such-thing")
    assert builtin in str(info.value) and (field is None or f"field '{field}'" in str(info.value))


def test_the_two_generator_registries_have_different_names():
    assert GENERATORS.kind == "dataset builder" and SYNTH_GENERATORS.kind == "synthetic-data generator"


def _entry_points(monkeypatch, group, points):
    real = metadata.entry_points

    def fake(**kwargs):
        if kwargs.get("group") == group:
            return metadata.EntryPoints(points)
        return real(**kwargs)

    monkeypatch.setattr(metadata, "entry_points", fake)


def test_a_third_party_part_arrives_through_an_entry_point(monkeypatch):
    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        width: int = 4

    module = types.ModuleType("tw_plugin_example")
    module.Widget = type("Widget", (), {"name": "widget", "Settings": Settings})
    monkeypatch.setitem(sys.modules, "tw_plugin_example", module)
    _entry_points(monkeypatch, "tunewright.widgets",
                  [metadata.EntryPoint("widget", "tw_plugin_example:Widget", "tunewright.widgets")])
    registry = PluginRegistry("widget", recipe_field="widgets", group="widgets")
    assert registry.names() == ["widget"] and registry.get_class("widget") is module.Widget
    # Its settings are typed: a bad value or an unknown key names the field.
    assert registry.settings_for("widget", {"width": 8}, "widgets.0.settings").width == 8
    with pytest.raises(TunewrightError, match=r"field 'widgets.0.settings.width'"):
        registry.settings_for("widget", {"width": "wide"}, "widgets.0.settings")
    with pytest.raises(TunewrightError, match=r"unknown setting for widget 'widget' \(its settings: width\)"):
        registry.settings_for("widget", {"colour": 1}, "widgets.0.settings")


def test_a_broken_or_clashing_plugin_is_named(monkeypatch):
    _entry_points(monkeypatch, "tunewright.widgets",
                  [metadata.EntryPoint("broken", "no_such_module_xyz:Thing", "tunewright.widgets")])
    with pytest.raises(TunewrightError, match=r"widget plugin 'broken' \(no_such_module_xyz:Thing.*failed to load"):
        PluginRegistry("widget", group="widgets").names()
    module = types.ModuleType("tw_plugin_clash")
    module.Lora = type("Lora", (), {"name": "taken"})
    monkeypatch.setitem(sys.modules, "tw_plugin_clash", module)
    _entry_points(monkeypatch, "tunewright.widgets",
                  [metadata.EntryPoint("clash", "tw_plugin_clash:Lora", "tunewright.widgets")])
    registry = PluginRegistry("widget", group="widgets")
    registry.register(type("Own", (), {"name": "taken"}))
    with pytest.raises(TunewrightError, match="widget 'taken' is already registered"):
        registry.names()
