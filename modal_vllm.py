"""The guide's entry point, kept so its commands work as written:

    modal run modal_vllm.py::download      # fill the weights volume once
    modal deploy modal_vllm.py             # https://WORKSPACE--vllm-llama70b-serve-vllm.modal.run/v1

The app itself ships inside the package (``llmodal/modal/app.py``); ``llmodal init`` writes this file.
"""

from llmodal.modal.app import *  # noqa: F401,F403 - app, serve_vllm, the GPU server, download
from llmodal.modal.app import app  # noqa: F401 - what `modal deploy` looks for
