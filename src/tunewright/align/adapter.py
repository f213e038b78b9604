"""What an adapter trained on aligned rows needs at inference: image and audio parts read the same way.

`tunewright train` on a dataset made by `data align` writes ``alignment.json`` into the adapter folder:
the layout, which engine reads each part type, and each engine's settings. Whoever asks that adapter
with image or audio parts (the server) turns them into the same text with the same engines and
settings; an adapter without the file reads text only, and the base model too.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import TunewrightError
from ..io import atomic_write_json
from ..models.adapters import read_sidecar
from .engines import engine_settings
from .render import ALIGNED_LAYOUT, render_aligned

FILE = "alignment.json"


@dataclass(frozen=True)
class AlignmentConfig:
    layout: str
    engines: dict[str, str]  # part type -> engine name
    settings: dict[str, dict[str, Any]]  # engine name -> its settings, as the dataset was aligned
    dataset: str  # name@version of the aligned dataset the adapter trained on

    @classmethod
    def from_dataset(cls, record) -> "AlignmentConfig | None":
        """The alignment a dataset version was made with (its spec from `data align`, or its parent's
        for a version derived from aligned rows, such as `data open-book`), else None."""
        spec = record.spec or {}
        while spec.get("kind") != "align":
            spec = (spec.get("parent") or {}).get("spec") or {}
            if not spec:
                return None
        engines = {kind: p["engine"] for kind, p in spec["engines"].items()}
        settings = {p["engine"]: p["settings"] for p in spec["engines"].values()}
        return cls(layout=spec["layout"], engines=engines, settings=settings,
                   dataset=f"{record.name}@{record.version}")

    def save(self, adapter_dir: Path) -> None:
        atomic_write_json(adapter_dir / FILE, asdict(self))

    @classmethod
    def read(cls, adapter_dir: Path | None) -> "AlignmentConfig | None":
        return read_sidecar(adapter_dir, FILE, what="alignment", build=lambda data: cls(**data), layout=ALIGNED_LAYOUT)


def align_messages(messages: list[dict], config: AlignmentConfig, media: Mapping[str, bytes]) -> list[dict]:
    """Each message's image and audio parts (canonical refs, their bytes in ``media``) as the text the
    adapter learned, with its engines and settings. Results are cached only for this call, in a
    temporary folder: what a customer sends is not kept on disk."""
    settings = {name: engine_settings(name, values) for name, values in config.settings.items()}
    with tempfile.TemporaryDirectory(prefix="tunewright-align-") as tmp:
        folder = Path(tmp)

        def resolve(ref: str) -> Path:
            path = folder / Path(ref).name
            if not path.exists():
                path.write_bytes(media[ref])
            return path

        return [{**m, "content": render_aligned(m["content"], resolve, folder / "cache", settings=settings,
                                                engines=config.engines)}
                if isinstance(m["content"], list) else m for m in messages]
