"""Tunewright: turn a generic open LLM into a measured domain specialist."""

import os as _os
import warnings as _warnings

# Nothing in Tunewright may reach a model hub: weights and data come from local files only. The
# environment only reaches a huggingface_hub imported after this package, so every from_pretrained
# call also passes local_files_only=True (tests/test_offline.py checks each call).
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
_os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# peft calls a transformers helper deprecated in 5.x on every get_peft_model; nothing for users to act on.
_warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

__version__ = "0.1.0"
