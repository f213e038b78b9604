"""Every pluggable registry refuses duplicates and bad names, and names the recipe field on a miss."""

import pytest

from tunewright.errors import TunewrightError
from tunewright.evaluate.metrics import METRICS
from tunewright.synth.base import GENERATORS
from tunewright.methods import METHODS

REGISTRIES = {"method": (METHODS, "lora", "train.method"), "metric": (METRICS, "contains", "eval.metrics"),
              "generator": (GENERATORS, "grounded-qa", "build.generator")}


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_registry_contract(kind):
    registry, builtin, field = REGISTRIES[kind]
    assert builtin in registry.names()
    assert registry.get(builtin).name == builtin
    with pytest.raises(ValueError, match="already registered"):
        registry.register(type("Twin", (), {"name": builtin}))
    with pytest.raises(ValueError, match="lowercase 'name'"):
        registry.register(type("Bad", (), {"name": "Has Spaces"}))
    with pytest.raises(TunewrightError) as info:
        registry.get("no-such-thing")
    assert f"field '{field}'" in str(info.value) and builtin in str(info.value)
