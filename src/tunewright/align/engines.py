"""What every alignment engine is: a registered class turning one media file into text.

An engine declares typed ``Settings``, a typed ``Result`` (anything with a ``text``), the package
whose version it runs under and the identity of the model it loads. The cache keys on all of them,
and they are recorded as the provenance of every result, so a number computed from aligned text can
be traced to the exact OCR or speech model and options that produced it.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..errors import TunewrightError
from ..plugins import PluginRegistry

# The recipe section that will hold per-engine settings: errors name `align.<engine>.<setting>`.
RECIPE_FIELD = "align"


class EngineResult(BaseModel):
    """The text an engine read from a file; engines add their detail (boxes, timestamps)."""

    model_config = ConfigDict(extra="forbid")
    text: str


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: str
    package: str
    version: str
    model: str
    settings: dict[str, Any]


class AlignEngine:
    name: ClassVar[str]
    modality: ClassVar[str]  # the part type it reads: "image" or "audio"
    package: ClassVar[str]  # the distribution whose version is recorded (importlib.metadata)
    Settings: ClassVar[type[BaseModel]]
    Result: ClassVar[type[EngineResult]]
    # Settings left out of the cache key because model_identity already covers them by content
    # (a model folder's path changes between machines, its files do not).
    identity_settings: ClassVar[tuple[str, ...]] = ()

    def version(self) -> str:
        try:
            return metadata.version(self.package)
        except metadata.PackageNotFoundError:
            raise TunewrightError(f"aligner '{self.name}' needs the package {self.package}, which is not "
                                  "installed (pip install 'tunewright[multimodal]')") from None

    def model_identity(self, settings: BaseModel) -> str:
        """A string that changes whenever the model's weights do (names plus content hashes)."""
        raise NotImplementedError

    def run(self, path: Path, settings: BaseModel) -> EngineResult:
        raise NotImplementedError

    def provenance(self, settings: BaseModel) -> Provenance:
        return Provenance(engine=self.name, package=self.package, version=self.version(),
                          model=self.model_identity(settings), settings=settings.model_dump(mode="json"))


ALIGNERS: PluginRegistry[AlignEngine] = PluginRegistry("aligner", recipe_field=RECIPE_FIELD, group="aligners")
register_aligner = ALIGNERS.register

# Which engine reads a part type unless the caller names another.
DEFAULT_ENGINES = {"image": "ocr", "audio": "asr"}


def engine_settings(name: str, values: BaseModel | dict[str, Any] | None) -> BaseModel:
    """``values`` as the engine's typed settings; a bad one names ``align.<engine>.<setting>``."""
    cls = ALIGNERS.get_class(name)
    if isinstance(values, BaseModel):
        if not isinstance(values, cls.Settings):
            raise TunewrightError(f"settings of type {type(values).__name__} given to aligner '{name}', "
                                  f"which takes {cls.Settings.__name__}", field=f"{RECIPE_FIELD}.{name}")
        return values
    return ALIGNERS.settings_for(name, values, field=f"{RECIPE_FIELD}.{name}")
