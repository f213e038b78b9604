"""Nothing may download from a hub: every transformers ``from_pretrained`` call in the package says
``local_files_only=True``, because HF_HUB_OFFLINE (set when tunewright is imported) does nothing
for a huggingface_hub imported before it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tunewright"


def _calls():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
                owner = node.func.value
                name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "?")
                yield path.relative_to(SRC), node.lineno, name, node


def test_every_transformers_from_pretrained_is_local_only():
    checked, missing = 0, []
    for path, line, owner, call in _calls():
        if owner == "PeftModel":  # loads an adapter folder we name by path; peft has no hub fallback for one
            continue
        checked += 1
        local = [k for k in call.keywords if k.arg == "local_files_only"]
        if not (local and isinstance(local[0].value, ast.Constant) and local[0].value.value is True):
            missing.append(f"{path}:{line} {owner}.from_pretrained")
    assert checked >= 12 and not missing, missing

