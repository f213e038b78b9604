"""A LLaVA-style vision-language model joined from two local folders: a vision encoder (CLIP or
SigLIP, whole or their vision half) and a causal language model the project trains.

The architecture is transformers' own ``LlavaForConditionalGeneration``: the encoder's patch
features pass a two-layer projector into the language model's embedding width, standing in for the
``<image>`` token's place in the text. Both models keep their weights; the projector is new (random),
and the tokenizer gains the ``<image>`` token (one new embedding row). The result is an ordinary
Hugging Face LLaVA folder, so the native path trains it like any vision-language model: with
``train.vision: {targets: [language], full: [connector]}`` the projector trains in full and LoRA
adapts the language model, saved as one standard PEFT adapter (peft's ``modules_to_save``).

The chat template is the language model's own, behind a short preamble that turns a message's
parts into text with ``<image>`` where each image goes, since a text model's template expects
string content.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TunewrightError
from ..io import atomic_dir

IMAGE_TOKEN = "<image>"
ENCODERS = {"clip_vision_model": "default", "siglip_vision_model": "full"}  # -> feature select strategy
# Parts as text before the language model's own template: each image part becomes IMAGE_TOKEN.
PARTS_AS_TEXT = (
    "{%- set ns = namespace(converted=[]) -%}"
    "{%- for m in messages -%}"
    "{%- if m['content'] is string -%}{%- set ns.converted = ns.converted + [m] -%}"
    "{%- else -%}{%- set ns.text = '' -%}"
    "{%- for p in m['content'] -%}"
    "{%- if p['type'] == 'image' -%}{%- set ns.text = ns.text + '" + IMAGE_TOKEN + "' -%}"
    "{%- elif p['type'] == 'text' -%}{%- set ns.text = ns.text + ('\\n' if ns.text else '') + p['text'] -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set ns.converted = ns.converted + [{'role': m['role'], 'content': ns.text}] -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set messages = ns.converted -%}"
)


def _vision_config(folder: Path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    config = getattr(config, "vision_config", config)  # a whole CLIP/SigLIP: its vision half
    if config.model_type not in ENCODERS:
        raise TunewrightError(f"model_type '{config.model_type}' is not a vision encoder this joins "
                              f"({', '.join(sorted(ENCODERS))}, or a CLIP/SigLIP model)", file=folder / "config.json",
                              field="model_type")
    return config


def compose_llava(vision_folder: str | Path, language_folder: str | Path, out: str | Path) -> Path:
    """Write the joined model, its tokenizer and processor to ``out``; returns ``out``."""
    import torch
    from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer,
                              LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor)

    from .loading import check_architecture

    vision_folder, language_folder, out = Path(vision_folder), Path(language_folder), Path(out)
    vision_config = _vision_config(vision_folder)
    check_architecture(language_folder / "config.json")
    tokenizer = AutoTokenizer.from_pretrained(language_folder, local_files_only=True)
    if tokenizer.chat_template is None:
        raise TunewrightError("the language model has no chat template", file=language_folder)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    strategy = ENCODERS[vision_config.model_type]
    config = LlavaConfig(vision_config=vision_config, text_config=AutoConfig.from_pretrained(language_folder,
                                                                                             local_files_only=True),
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy=strategy, vision_feature_layer=-1)
    language = AutoModelForCausalLM.from_pretrained(language_folder, dtype=torch.float32, local_files_only=True)
    language.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    config.text_config.vocab_size = len(tokenizer)
    encoder = AutoModel.from_pretrained(vision_folder, dtype=torch.float32, local_files_only=True)
    encoder = encoder if encoder.config.model_type in ENCODERS else encoder.vision_model
    joined = LlavaForConditionalGeneration(config)
    with torch.no_grad():
        _load(joined.model.vision_tower, encoder.state_dict(), "vision encoder")
        _load(joined.model.language_model, language.model.state_dict(), "language model")
        joined.lm_head.weight.copy_(language.get_output_embeddings().weight)
    images = AutoImageProcessor.from_pretrained(vision_folder, local_files_only=True)
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=vision_config.patch_size,
                               vision_feature_select_strategy=strategy,
                               num_additional_image_tokens=1 if strategy == "default" else 0,
                               chat_template=PARTS_AS_TEXT + tokenizer.chat_template)
    with atomic_dir(out) as tmp:
        joined.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return out


def _load(module, state: dict, what: str) -> None:
    # The vision tower wraps the encoder in a ``vision_model`` attribute; a saved vision half has it too.
    own = module.state_dict()
    if set(state) != set(own):
        state = {f"vision_model.{k}": v for k, v in state.items()} if what == "vision encoder" else state
    missing = set(own) - set(state)
    if missing:
        raise TunewrightError(f"the {what}'s weights do not fit the joined model (missing {sorted(missing)[:3]})")
    module.load_state_dict({k: state[k] for k in own})
