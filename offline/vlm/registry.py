"""The VLM backends, by the name ``vlm.backend`` takes. Adding a backend: one module with a
settings model (a ``backend: Literal["name"]`` tag) and a class following ``VLMBackend``,
plus one line in ``BACKENDS``."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Discriminator, Tag, TypeAdapter

from groundrec.offline.vlm.base import VLMBackend, VLMSettings
from groundrec.offline.vlm.hf import HFVLM, HFVLMConfig
from groundrec.offline.vlm.openai import OpenAIVLM

BACKENDS: dict[str, type[VLMBackend]] = {
    "hf": HFVLM,
    "openai": OpenAIVLM,
}


def _backend_name(value) -> str:
    return value.get("backend", "hf") if isinstance(value, dict) else getattr(value, "backend", "hf")


# The ``vlm:`` section: the settings model of the backend it names (hf when it names none).
VLMConfig = Annotated[Union[tuple(Annotated[b.Settings, Tag(n)] for n, b in BACKENDS.items())],  # noqa: UP007
                      Discriminator(_backend_name)]
_adapter = TypeAdapter(VLMConfig)


def default_vlm_config() -> HFVLMConfig:
    return HFVLMConfig()


def parse_vlm_config(data: dict | VLMSettings) -> VLMSettings:
    return _adapter.validate_python(data)


def backend_class(cfg: VLMSettings) -> type[VLMBackend]:
    return BACKENDS[cfg.backend]


def load_backend(cfg: VLMSettings) -> VLMBackend:
    return backend_class(cfg)(cfg)
