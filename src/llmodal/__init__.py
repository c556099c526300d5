"""llmodal: your own open LLM behind a private OpenAI-compatible endpoint.

vLLM on Modal's serverless GPUs or on this machine, with the answer to "does it fit, what
does it cost, how fast is it" before anyone pays. Public surface:

- ``client()`` / ``async_client()``: openai clients from ``.env`` that survive cold starts.
- ``load_settings()``: the one typed config.
- ``build_launch()``: the one vLLM command line.
"""

from llmodal.tools.client import async_client, client
from llmodal.core.config import Settings, load_settings
from llmodal.engine.launch import build_launch

__all__ = ["Settings", "async_client", "build_launch", "client", "load_settings"]
__version__ = "0.1.0"
