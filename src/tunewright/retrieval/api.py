"""The workspace's retrieval index as a user would call it: build from the recipe's sources, register,
load by ``name`` or ``name@version``.

Sources are the recipe's ``retrieval.sources`` or, when unset, every ``build.tables[].path`` and
``build.documents[].path``. Each version lives in ``indexes/<name>/<version>/`` (the version is the
first 12 hex of the index's sha256), so building unchanged sources again writes nothing new and
registers nothing new.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from ..errors import TunewrightError
from .chunks import Chunk
from .index import Index, TextEmbedder, build_index, changed_sources

INDEXES_DIR = "indexes"
SOURCES_FIELD = "retrieval.sources"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_index_name(workspace) -> str:
    return workspace.recipe.retrieval.name or f"{workspace.recipe.name}-index"


def index_sources(workspace) -> list[str]:
    """The recipe's sources for the index, workspace-relative as written there, duplicates dropped."""
    recipe = workspace.recipe
    if recipe.retrieval.sources is not None:
        sources = list(recipe.retrieval.sources)
        if not sources:
            raise TunewrightError("lists no sources to index", file=workspace.recipe_path, field=SOURCES_FIELD)
    else:
        build = recipe.build
        sources = [t.path for t in build.tables] + [d.path for d in build.documents] if build else []
        if not sources:
            raise TunewrightError("nothing to index: set retrieval.sources, or build.tables / build.documents",
                                  file=workspace.recipe_path, field=SOURCES_FIELD)
    return list(dict.fromkeys(sources))


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise TunewrightError(f"invalid index name '{name}': letters, digits, '.', '_' and '-', starting with a "
                              "letter or digit", field="name")
    return name


def build_workspace_index(workspace, name: str | None = None, *, embedder: TextEmbedder | None = None,
                          derived: dict[str | Path, Sequence[Chunk]] | None = None):
    """Build the index over the recipe's sources, write it under ``indexes/<name>/<version>/`` and register
    it; unchanged sources give the version already registered (an ``IndexRecord``). ``derived``: see
    :func:`build_index` (``synth.build.build_recipe_index`` adds the recipe's group summaries)."""
    name = _check_name(name or default_index_name(workspace))
    index = build_index(index_sources(workspace), root=workspace.root, embedder=embedder,
                        stem=workspace.recipe.retrieval.stem, derived=derived)
    folder = workspace.dir(INDEXES_DIR) / name / index.version
    if not _intact(folder, index):
        index.save(folder)
    return workspace.registry.add_index(name=name, version=index.version, sha256=index.sha256, path=str(folder),
                                        n_chunks=len(index), source_files=index.sources)


def _intact(folder: Path, index: Index) -> bool:
    if not folder.is_dir():
        return False
    try:
        return Index.load(folder).sha256 == index.sha256
    except TunewrightError:
        return False  # damaged: write it again


def parse_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition("@")
    return name, version or None


def load_workspace_index(workspace, ref: str | None = None, *, embedder: TextEmbedder | None = None) -> Index:
    """The registered index ``name`` (latest version) or ``name@version``; default the recipe's name."""
    name, version = parse_ref(ref or default_index_name(workspace))
    record = workspace.registry.get_index(name, version)
    index = Index.load(record.path, embedder=embedder)
    if index.sha256 != record.sha256:
        raise TunewrightError(f"holds index {index.version}, but the registry has {record.version} under this path",
                              file=Path(record.path) / "manifest.json")
    return index


def stale_sources(workspace, index: Index) -> list[str]:
    """Source files of ``index`` that changed or went missing in the workspace since it was built."""
    return changed_sources(index, workspace.path)

