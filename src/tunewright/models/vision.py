"""Vision-language models: the one place that knows where each architecture keeps its parts.

A VLM is three parts: the vision tower (image -> patch features), the connector or projector
(patch features -> the language model's width) and the language model. PEFT can adapt any of them;
the recipe names parts (``train.vision.targets``), not module paths, so this table maps a
``model_type`` to the module-name prefix of each part. The linear layers inside a part are read
from the model built on the meta device (shapes only, no weights), as ``layers.py`` does for
text models, so new layer names inside a known family need no edit here.

Qwen2-VL keeps its connector (``merger``) inside the vision tower's module, so a part may also
name prefixes it leaves to another part.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunewrightError

PARTS = ("language", "connector", "vision")
DEFAULT_PARTS = ("language", "connector")  # the vision tower is pretrained on far more images than a tuning set


@dataclass(frozen=True)
class VisionFamily:
    model_types: tuple[str, ...]
    language: str
    connector: str
    vision: str
    # Prefixes inside ``vision`` that belong to another part (Qwen2-VL's merger is its connector).
    vision_excludes: tuple[str, ...] = ()
    # The image placeholder that ``ImageTokenProcessor`` expands when the family's own processor
    # cannot be built (Qwen2-VL's needs torchvision); None: no fallback.
    image_token: str | None = None

    def prefix(self, part: str) -> str:
        return getattr(self, part)

    def owns(self, part: str, module_name: str) -> bool:
        """Whether ``module_name`` lies inside ``part``."""
        inside = module_name.startswith(self.prefix(part) + ".")
        if part == "vision":
            inside = inside and not any(module_name.startswith(p + ".") for p in self.vision_excludes)
        return inside


VISION_FAMILIES: dict[str, VisionFamily] = {}


def register_vision_family(family: VisionFamily) -> VisionFamily:
    for model_type in family.model_types:
        VISION_FAMILIES[model_type] = family
    return family


# Paths as transformers 5 names them (``model.<part>``); ``find_family`` checks them on the real
# module tree, so a renaming in a later transformers fails loudly instead of training nothing.
register_vision_family(VisionFamily(("idefics3", "smolvlm"), language="model.text_model",
                                    connector="model.connector", vision="model.vision_model"))
register_vision_family(VisionFamily(("llava",), language="model.language_model",
                                    connector="model.multi_modal_projector", vision="model.vision_tower"))
register_vision_family(VisionFamily(("qwen2_vl", "qwen2_5_vl"), language="model.language_model",
                                    connector="model.visual.merger", vision="model.visual",
                                    vision_excludes=("model.visual.merger",), image_token="<|image_pad|>"))


def read_model_type(config_path: Path) -> str:
    """config.json's ``model_type``, or one line saying why there is none (text and vision models
    alike: ``loading.check_architecture`` reads it here too)."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TunewrightError(f"cannot read the model config: {exc}", file=config_path) from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not model_type:
        raise TunewrightError("config.json names no model_type, so no architecture can be built from it",
                              file=config_path, field="model_type")
    return model_type


def find_family(folder: str | Path) -> VisionFamily:
    """The family of a local model folder; refuses a model_type that is not a known VLM."""
    model_type = read_model_type(Path(folder) / "config.json")
    family = VISION_FAMILIES.get(model_type)
    if family is None:
        known = ", ".join(sorted(VISION_FAMILIES))
        raise TunewrightError(f"model_type '{model_type}' is not a vision-language model Tunewright knows ({known}); "
                              "text models train with `tunewright train`", file=Path(folder) / "config.json",
                              field="model_type")
    return family


def part_linears(model, family: VisionFamily) -> dict[str, list[str]]:
    """Full module names of every ``nn.Linear`` in each part; refuses a part found empty."""
    import torch

    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    found = {part: [n for n in names if family.owns(part, n)] for part in PARTS}
    for part, linears in found.items():
        if not linears:
            raise TunewrightError(f"no linear layers under '{family.prefix(part)}' in {type(model).__name__}; "
                                  f"this transformers version names the {part} part differently",
                                  field="model_type")
    return found


def check_parts(parts, field: str = "train.vision.targets") -> tuple[str, ...]:
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise TunewrightError(f"unknown part(s) {unknown or '[]'}; choose from {', '.join(PARTS)}", field=field)
    return tuple(dict.fromkeys(parts))


def target_modules(model, family: VisionFamily, parts, layer_names: list[str] | None = None) -> str:
    """peft ``target_modules`` adapting the linear layers of ``parts``, as one regex.

    The exact names joined as alternatives: peft fullmatches a regex against every module name, so
    it cannot catch a layer of a part left out, where a list's entries match as name suffixes.
    ``layer_names`` (the recipe's ``train.target_modules``) narrows each part to linears with those
    last names.
    """
    parts = check_parts(parts)
    linears = part_linears(model, family)
    wanted = sorted(n for part in parts for n in linears[part]
                    if layer_names is None or n.rsplit(".", 1)[-1] in layer_names)
    if not wanted:
        raise TunewrightError(f"train.target_modules {layer_names} names no linear layer of {', '.join(parts)}",
                              field="train.target_modules")
    regex = "|".join(re.escape(n) for n in wanted)  # exact names: fullmatch cannot stray into another part
    return rf"(?:{regex})"


def meta_model(folder: str | Path):
    """The architecture built on the meta device (shapes, no memory, no weights): what the parts hold."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    find_family(folder)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def load_vision_model(folder: str | Path, dtype=None):
    """The model from a local folder (never the Hub), in eval mode."""
    import torch
    from transformers import AutoModelForImageTextToText

    find_family(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype or torch.float32, local_files_only=True)
    model.eval()
    return model


def attach_vision_adapter(model, adapter_folder: str | Path):
    """A native adapter (standard PEFT folder) on a loaded vision-language model, for answering:
    what eval, generate and the server each wrap the base in."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_folder), is_trainable=False).eval()


def load_processor(folder: str | Path):
    """The model's own processor (image preprocessing, image-token expansion, chat template)."""
    from transformers import AutoProcessor

    family = find_family(folder)
    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    except (ImportError, AttributeError, ValueError) as exc:
        if family.image_token is None:
            raise TunewrightError(f"cannot load the model's processor: {exc}", file=folder) from None
        processor = ImageTokenProcessor.from_folder(folder, family.image_token)
    if getattr(processor, "chat_template", None) is None:
        raise TunewrightError("the model's processor has no chat template; Tunewright needs the model's own",
                              file=folder)
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processor


class ImageTokenProcessor:
    """Qwen2-VL's processor for images alone: the image processor, then each placeholder expanded to
    one token per merged patch group, then the tokenizer, with ``mm_token_type_ids`` (1 on image
    tokens) for the model's 3-D rotary positions.

    Why not the library's: transformers 5 builds ``Qwen2VLProcessor`` only together with its video
    processor, and that needs torchvision, which has no CPU build for this torch on PyPI. The steps
    are the ones the library's processor runs for images (``replace_image_token``); the model itself
    refuses a row whose image tokens do not match its image features, which the tests run into.
    """

    def __init__(self, tokenizer, image_processor, chat_template: str, image_token: str) -> None:
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.chat_template, self.image_token = chat_template, image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)

    @classmethod
    def from_folder(cls, folder: str | Path, image_token: str) -> "ImageTokenProcessor":
        from transformers import AutoImageProcessor, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            images = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TunewrightError(f"cannot load the model's tokenizer and image processor: {exc}", file=folder) from None
        template = tokenizer.chat_template or _folder_template(Path(folder))
        return cls(tokenizer, images, template, image_token)

    def apply_chat_template(self, messages, *, tokenize: bool = False, add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=tokenize,
                                                  add_generation_prompt=add_generation_prompt)

    def __call__(self, *, text: list[str], images=None, return_tensors: str = "pt", add_special_tokens: bool = False):
        out = {}
        if images:
            pixels = self.image_processor(images=[i for per_text in images for i in per_text], return_tensors="pt")
            counts = iter([int(grid.prod()) // self.image_processor.merge_size ** 2 for grid in pixels["image_grid_thw"]])
            text = [re.sub(re.escape(self.image_token), lambda _: self.image_token * next(counts), t) for t in text]
            out.update(pixels)
        encoded = self.tokenizer(text, return_tensors=return_tensors, add_special_tokens=add_special_tokens)
        out.update(encoded)
        out["mm_token_type_ids"] = (encoded["input_ids"] == self.image_token_id).long()
        return out

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)


def _folder_template(folder: Path) -> str | None:
    for name in ("chat_template.jinja", "chat_template.json"):
        path = folder / name
        if path.exists():
            text = path.read_text(encoding="utf-8")
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None
