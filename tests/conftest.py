"""Shared test fixtures."""

from __future__ import annotations

import pytest

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer():
    """A word-level fast tokenizer with a ChatML template, built in memory (no downloads).

    Words are split on whitespace and unknown words map to one [UNK] token, so a message renders
    to exactly ``3 + number of words in its content`` tokens: <|im_start|>, the role, the words,
    <|im_end|>. Tests can compute expected lengths by hand.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", "<|pad|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=specials)
    core.train_from_iterator(
        ["system user assistant", "hello world how are you", "the price is 189 dollars", "yes no maybe"],
        trainer=trainer,
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="<|pad|>", eos_token="<|im_end|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


# --- a tiny randomly initialised Llama, saved as a local Hugging Face folder -------------------

SMOL_STYLE_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "How much does the Ridgeback 2 Tent cost? The Ridgeback 2 Tent costs $189.",
    "What is the warranty on the Aurora Headlamp? It has a 2 years warranty.",
    "You are a helpful assistant. system user assistant",
    "hello world how are you the price is 189 dollars yes no maybe 0123456789",
]


def build_tiny_model_dir(folder):
    """Byte-level BPE tokenizer (any text encodes) + a 2-layer Llama: trains in well under a second a step."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    tokenizer.chat_template = SMOL_STYLE_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """The session's own model cache (the GGUF is converted at most once per test run).

    Session-scoped so that module-scoped model fixtures, which run before any function-scoped
    fixture, see it too.
    """
    folder = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNEWRIGHT_CACHE", str(folder))
        yield folder


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No workspace inherited from the caller's environment; a fixed actor for the audit log."""
    monkeypatch.delenv("TUNEWRIGHT_WORKSPACE", raising=False)
    monkeypatch.setenv("TUNEWRIGHT_ACTOR", "tester")


# --- a throwaway PostgreSQL server, for the registry's "any SQLAlchemy URL" promise ------------


def _pg_bin(name):
    import glob
    import shutil

    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    return found


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """Start PostgreSQL on a Unix socket in a temp folder (no TCP port), yield a URL, stop it.

    .ci/run installs Debian's postgresql when initdb is missing; PostgreSQL refuses to run as root,
    so the server runs as the 'postgres' user that package creates.
    """
    import os
    import pathlib
    import pwd
    import shutil
    import subprocess
    import tempfile

    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs them)")
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server")
        # A folder of its own in the temp root, not under pytest-of-root: every pytest session that
        # starts sets that folder back to 0700, which would lock the server user out of its data.
        folder = pathlib.Path(tempfile.mkdtemp(prefix="tunewright-pg-"))
        shutil.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    else:
        folder = tmp_path_factory.mktemp("postgres")
    data, port = folder / "data", 55432 + os.getpid() % 1000
    subprocess.run([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], check=True, capture_output=True)
    options = f"-k {folder} -c listen_addresses='' -p {port}"
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        if prefix:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def store(tmp_path):
    """A review store on a fresh SQLite registry."""
    from review_helpers import make_store

    review_store = make_store(tmp_path)
    yield review_store
    review_store.registry.close()
