"""The recipe's ``align:`` section: which engine reads each media part type, and each engine's own
settings as ``align.<engine>.<setting>`` (for example ``align.ocr.min_confidence: 0.6``).

Engines are plugins living above this layer, so here only the shape is checked (a mapping of
settings per engine); the values are checked by the engine's own typed settings when alignment runs
(``align.engines.engine_settings``), which names ``align.<engine>.<setting>``, as
``train.method_settings`` are checked by the method. Unset, every engine runs on its defaults.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PartType = Literal["image", "audio"]


class AlignSpec(BaseModel):
    # Extra keys are engine names; their values must be mappings (typed through __pydantic_extra__,
    # so a bad one is named align.<engine> with its line).
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, dict[str, Any]] = Field(init=False)

    engines: dict[PartType, str] = Field(
        default_factory=dict, description="which engine reads a part type; unset: ocr for image, asr for audio")

    def engine_settings(self) -> dict[str, dict[str, Any]]:
        """Each configured engine's settings by engine name."""
        return dict(self.model_extra or {})
