"""A workspace: one recipe, one registry, and the folders every stage writes into."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import yaml

from .config import RECIPE_FILENAME, Recipe, load_recipe
from .errors import TunewrightError
from .io import atomic_write_text

WORKSPACE_ENV = "TUNEWRIGHT_WORKSPACE"
SUBDIRS = ("data", "datasets", "runs", "adapters", "reports", "outputs")


def default_workspace_dir() -> Path:
    return Path(os.environ.get(WORKSPACE_ENV) or ".")


class Workspace:
    def __init__(self, root: Path, recipe: Recipe) -> None:
        self.root = root
        self.recipe = recipe

    @classmethod
    def open(cls, root: str | Path | None = None) -> "Workspace":
        root = Path(root) if root is not None else default_workspace_dir()
        recipe_path = root / RECIPE_FILENAME
        if not recipe_path.is_file():
            raise TunewrightError(
                f"not a Tunewright workspace (no {RECIPE_FILENAME}); run 'tunewright init {root}' first", file=root
            )
        return cls(root.resolve(), load_recipe(recipe_path))

    @classmethod
    def init(cls, root: str | Path, recipe: Recipe | None = None, *, force: bool = False) -> "Workspace":
        root = Path(root)
        recipe_path = root / RECIPE_FILENAME
        if recipe_path.exists() and not force:
            raise TunewrightError("a workspace already exists here (use --force to overwrite the recipe)", file=recipe_path)
        try:
            root.mkdir(parents=True, exist_ok=True)
            for sub in SUBDIRS:
                (root / sub).mkdir(exist_ok=True)
        except OSError as exc:
            raise TunewrightError(f"cannot create workspace: {exc.strerror or exc}", file=root) from None
        recipe = recipe or Recipe(name=root.resolve().name or "project")
        from .models import resolve_model

        resolve_model(recipe.base_model)  # fail now, not an hour later at training time
        text = yaml.safe_dump(recipe.model_dump(mode="json", exclude_none=True), sort_keys=False)
        atomic_write_text(recipe_path, text)
        workspace = cls(root.resolve(), recipe)
        workspace.registry  # create the database and run migrations now, not on first use
        return workspace

    @property
    def recipe_path(self) -> Path:
        return self.root / RECIPE_FILENAME

    def path(self, relative: str | Path) -> Path:
        """A path from the recipe, which is relative to the workspace unless absolute."""
        relative = Path(relative)
        return relative if relative.is_absolute() else self.root / relative

    def dir(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def registry_url(self) -> str:
        return self.recipe.registry.url or f"sqlite:///{self.root / 'registry.db'}"

    @property
    def anchor_file(self) -> Path:
        configured = self.recipe.govern.anchor_file
        return self.path(configured) if configured else self.root / "audit" / "anchors.jsonl"

    @cached_property
    def registry(self):
        from .registry import Registry
        from .registry.events import anchor_release_events

        registry = Registry(self.registry_url)
        anchor_release_events(registry.engine, self.anchor_file)
        return registry


def init_workspace(
    root: str | Path,
    *,
    name: str | None = None,
    base_model: str | None = None,
    template: str | Path | None = None,
    force: bool = False,
) -> Workspace:
    """Create a workspace, optionally from a template folder holding a recipe and the files it names."""
    import shutil

    root = Path(root)
    if template is None:
        fields = {"name": name or root.resolve().name or "project"}
        if base_model:
            fields["base_model"] = base_model
        try:
            recipe = Recipe(**fields)
        except ValueError as exc:
            raise TunewrightError(f"invalid project name '{fields['name']}' ({exc.errors()[0]['msg']})", field="name") from None
        return Workspace.init(root, recipe, force=force)
    template = Path(template)
    recipe = load_recipe(template / RECIPE_FILENAME)
    updates = {k: v for k, v in {"name": name, "base_model": base_model}.items() if v}
    recipe = recipe.model_copy(update=updates)
    if (root / RECIPE_FILENAME).exists() and not force:
        raise TunewrightError("a workspace already exists here (use --force to overwrite the recipe)", file=root / RECIPE_FILENAME)
    root.mkdir(parents=True, exist_ok=True)
    for item in template.iterdir():
        if item.name == RECIPE_FILENAME or item.name.startswith("."):
            continue
        target = root / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    workspace = Workspace.init(root, recipe, force=True)
    if not updates:
        # Keep the template's own text, comments included, rather than a re-serialised copy.
        atomic_write_text(workspace.recipe_path, (template / RECIPE_FILENAME).read_text(encoding="utf-8"))
    return workspace
