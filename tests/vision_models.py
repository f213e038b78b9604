"""Tiny randomly initialised vision-language models of each family Tunewright knows, built here (no
downloads): the conftest's byte-level tokenizer plus the family's image tokens, a chat template that
places the family's image placeholder, the family's own image processor class with a small image
size, and a 2-layer language model / 1-layer vision tower of width 32."""

from __future__ import annotations

import importlib.util

import transformers

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
QWEN_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


def _template(placeholder: str) -> str:
    return ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
            "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}" + placeholder +
            "{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tokenizer(tiny_model_dir, extra):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    return tokenizer


def _text(tokenizer, config_class=None, **extra):
    settings = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id, **extra)
    return config_class(**settings) if config_class else settings


def _vision(**extra):
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, **extra)


def _llava(tiny_model_dir):
    t = transformers
    tokenizer = _tokenizer(tiny_model_dir, ["<image>"])
    config = t.LlavaConfig(vision_config=t.CLIPVisionConfig(**_vision(image_size=28, patch_size=14)),
                           text_config=_text(tokenizer, t.LlamaConfig),
                           image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
    images = t.CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = t.LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                                 vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                 chat_template=_template("<image>"))
    return t.LlavaForConditionalGeneration(config), processor


def _idefics3(tiny_model_dir):
    t = transformers
    tokenizer = _tokenizer(tiny_model_dir, ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"])
    config = t.Idefics3Config(vision_config=_vision(image_size=28, patch_size=14),
                              text_config=_text(tokenizer, t.LlamaConfig),
                              image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2)
    images = t.Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 28},
                                      max_image_size={"longest_edge": 28})
    processor = t.Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=1,
                                    chat_template=_template("<image>"))
    return t.Idefics3ForConditionalGeneration(config), processor


def _qwen(tiny_model_dir, v25: bool):
    t = transformers
    names = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = _tokenizer(tiny_model_dir, names)
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in names}
    text = _text(tokenizer, rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]})  # head_dim 8: 4 pairs
    if v25:
        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[0], window_size=56)
        model_class, config_class, processor_class = (t.Qwen2_5_VLForConditionalGeneration, t.Qwen2_5_VLConfig,
                                                      "Qwen2_5_VLProcessor")
    else:
        vision = dict(depth=1, embed_dim=32, hidden_size=32, mlp_ratio=2, num_heads=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        model_class, config_class, processor_class = (t.Qwen2VLForConditionalGeneration, t.Qwen2VLConfig,
                                                      "Qwen2VLProcessor")
    config = config_class(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                          video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                          vision_end_token_id=ids["<|vision_end|>"])
    images = t.Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                        temporal_patch_size=2)
    if HAS_TORCHVISION:
        processor = getattr(t, processor_class)(image_processor=images, tokenizer=tokenizer,
                                                video_processor=t.Qwen2VLVideoProcessor(),
                                                chat_template=_template(QWEN_PLACEHOLDER))
    else:  # saved as its parts, which models.vision.ImageTokenProcessor reads
        tokenizer.chat_template = _template(QWEN_PLACEHOLDER)
        processor = FolderParts(tokenizer, images)
    return model_class(config), processor


class FolderParts:
    """A tokenizer and an image processor saved into one model folder, as a Hub folder holds them."""

    def __init__(self, *parts):
        self.parts = parts

    def save_pretrained(self, folder):
        for part in self.parts:
            part.save_pretrained(folder)


BUILDERS = {
    "idefics3": _idefics3,
    "llava": _llava,
    "qwen2_vl": lambda folder: _qwen(folder, v25=False),
    "qwen2_5_vl": lambda folder: _qwen(folder, v25=True),
}


def save_tiny_vlm(model_type: str, tiny_model_dir, folder):
    """The family's tiny model and processor saved as a Hugging Face folder."""
    import torch

    torch.manual_seed(0)
    model, processor = BUILDERS[model_type](tiny_model_dir)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def reloaded_logits(folder, adapter, rows, media):
    """Logits on ``rows`` of the adapter loaded twice by plain peft, and of the bare model."""
    import torch
    from peft import PeftModel

    from tunewright.data.vision import collate_vision, encode_vision_row
    from tunewright.models.vision import load_processor, load_vision_model

    processor = load_processor(folder)
    batch = collate_vision([encode_vision_row(processor, r.messages, media, 512) for r in rows],
                           processor.tokenizer.pad_token_id)
    batch.pop("labels")
    models = [PeftModel.from_pretrained(load_vision_model(folder), adapter).eval() for _ in range(2)]
    with torch.no_grad():
        return tuple(m(**batch).logits for m in (*models, load_vision_model(folder)))
