"""Every shipped recipe loads and builds; recipe errors name the file, line and field."""

from pathlib import Path

import pytest

from tunewright.config import load_recipe
from tunewright.errors import TunewrightError
from tunewright.synth.grounded import build_rows

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RECIPES = sorted(EXAMPLES.glob("*/tunewright.yaml"))


@pytest.mark.parametrize("recipe_path", RECIPES, ids=lambda p: p.parent.name)
def test_shipped_recipe_builds(recipe_path):
    recipe = load_recipe(recipe_path)
    assert recipe.build is not None
    rows = build_rows(recipe.build, lambda p: recipe_path.parent / p)
    train = [r for r in rows if r.split == "train"]
    evals = [r for r in rows if r.split == "eval"]
    assert train and evals
    train_questions = {r.row.messages[0].content.lower() for r in train}
    assert not any(r.row.messages[0].content.lower() in train_questions for r in evals)


def test_peachtree_covers_every_catalog_row():
    recipe_path = EXAMPLES / "peachtree" / "tunewright.yaml"
    recipe = load_recipe(recipe_path)
    rows = build_rows(recipe.build, lambda p: recipe_path.parent / p)
    catalog_lines = (recipe_path.parent / "catalog.csv").read_text().strip().splitlines()[1:]
    names = {line.split(",")[1] for line in catalog_lines}
    asked = {name for name in names if any(name in r.row.messages[0].content for r in rows if r.split == "eval")}
    assert asked == names


def _write(tmp_path, text):
    path = tmp_path / "tunewright.yaml"
    path.write_text(text)
    return path


def test_unknown_field_names_line_and_field(tmp_path):
    path = _write(tmp_path, "name: demo\ntrain:\n  r: 8\n  lerning_rate: 0.1\n")
    with pytest.raises(TunewrightError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:4: field 'train.lerning_rate': unknown field"


def test_wrong_type_names_line_and_field(tmp_path):
    path = _write(tmp_path, "name: demo\ntrain:\n  epochs: many\n")
    with pytest.raises(TunewrightError, match=r"tunewright.yaml:3: field 'train.epochs': Input should be a valid number"):
        load_recipe(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    path = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(TunewrightError, match="invalid YAML"):
        load_recipe(path)
    with pytest.raises(TunewrightError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_non_utf8_recipe(tmp_path):
    path = tmp_path / "tunewright.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(TunewrightError, match="not valid UTF-8"):
        load_recipe(path)
