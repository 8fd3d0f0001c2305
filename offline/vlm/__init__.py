"""VLM backends: image + instruction -> text. See ``registry.py`` for the list and how to add one."""

from groundrec.offline.vlm.base import (DEFAULT_VLM, Resources, VLMBackend, VLMSettings, VLMUnavailable,
                                        model_fingerprint, resolve_vlm)
from groundrec.offline.vlm.hf import HFVLM, HFVLMConfig
from groundrec.offline.vlm.openai import OpenAIVLM, OpenAIVLMConfig

__all__ = ["DEFAULT_VLM", "HFVLM", "HFVLMConfig", "OpenAIVLM", "OpenAIVLMConfig", "Resources", "VLMBackend",
           "VLMSettings", "VLMUnavailable", "model_fingerprint", "resolve_vlm"]
