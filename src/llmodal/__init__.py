"""llmodal: your own open LLM behind a private OpenAI-compatible endpoint.

vLLM on Modal's serverless GPUs or on this machine, with the answer to "does it fit, what does it
cost, how fast is it" before anyone pays. Public surface:

- ``client()`` / ``async_client()``: openai clients from ``.env`` that survive cold starts.
- ``load_settings()``: the one typed config.
- ``build_launch()``: the one vLLM command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmodal.core.config import Settings, load_settings
    from llmodal.engine.launch import build_launch
    from llmodal.tools.client import async_client, client

# Loaded on first use: vLLM's API process imports the guard (llmodal.engine.auth) while it starts,
# and the package must not pull the client, the config and their dependencies into that process.
_PUBLIC = {"client": "llmodal.tools.client", "async_client": "llmodal.tools.client",
           "Settings": "llmodal.core.config", "load_settings": "llmodal.core.config",
           "build_launch": "llmodal.engine.launch"}

__all__ = ["Settings", "async_client", "build_launch", "client", "load_settings"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'llmodal' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
