"""What both tiers configure alike: the strict base model, YAML loading with dotted
overrides, and the catalog's columns. Each tier's own settings live in that tier
(``groundrec.offline.config``, ``groundrec.offline.evaluation.config``, ``groundrec.online.config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from groundrec.shared.errors import UserError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo in a YAML file is named, not ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CatalogConfig(StrictModel):
    """Where the catalog is and what its columns are called."""

    path: Path | None = None
    images_root: str | None = Field(None, description="the folder or fsspec URI (s3://bucket/images) that "
                                    "relative image paths start from; default: the catalog's folder")
    id_column: str = "item_id"
    image_column: str = "image"
    text_columns: list[str] = Field(default_factory=lambda: ["title", "description"])

    @field_validator("images_root", mode="before")
    @classmethod
    def _folder_or_uri(cls, v):
        return str(v) if isinstance(v, Path) else v  # a folder given as a Path; a URI stays text


def require_settings(settings: list[tuple[str, object]]) -> None:
    """ValueError naming every (name, value) pair whose value is unset."""
    missing = [name for name, value in settings if value is None]
    if missing:
        raise UserError(f"missing required setting(s): {', '.join(missing)}")


def load_config(path: Path | None, overrides: dict | None, model: type[M]) -> M:
    """Read a YAML config (optional), apply dotted overrides like {'vlm.model': 'x'}, validate."""
    data: dict = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise UserError(f"config file {path} must hold a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if node.get(p) is None:  # absent, or an empty section (``run:`` with nothing under it)
                node[p] = {}
            elif not isinstance(node[p], dict):
                raise UserError(f"cannot set {dotted}: {p} is {node[p]!r} in the config, not a section")
            node = node[p]
        node[leaf] = value
    return model.model_validate(data)
