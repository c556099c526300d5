"""What ``llmodal init`` writes into the user's folder: the guide's ``modal_vllm.py`` (a few lines that
import the packaged app, the same text as the repository's own) and a commented ``.env``."""

from __future__ import annotations

GUIDE_APP = '''"""The guide's entry point, kept so its commands work as written:

    modal run modal_vllm.py::download      # fill the weights volume once
    modal deploy modal_vllm.py             # https://WORKSPACE--vllm-llama70b-serve-vllm.modal.run/v1

The app itself ships inside the package (``llmodal/modal/app.py``); ``llmodal init`` writes this file.
"""

from llmodal.modal.app import *  # noqa: F401,F403 - app, serve_vllm, the GPU server, download
from llmodal.modal.app import app  # noqa: F401 - what `modal deploy` looks for
'''

# The guide's settings first, then every other setting, commented, with its allowed values.
GUIDE_LINES = [
    ("Deployment (where you run `llmodal deploy` / `modal deploy modal_vllm.py`)", [
        ("VLLM_MODEL", "meta-llama/Llama-3.1-70B-Instruct"), ("VLLM_MAX_MODEL_LEN", "8192"),
        ("VLLM_GPU_MEMORY_UTILIZATION", "0.95"),
        ("VLLM_SERVER_API_KEY", "<the key in the Modal secret vllm-secrets; python -c 'import secrets; "
                                "print(secrets.token_urlsafe(32))'>"),
        ("MODAL_PROXY_TOKEN_ID", "<wk-... the proxy auth token in the same secret: "
                                 "https://modal.com/settings/proxy-auth-tokens>"),
        ("MODAL_PROXY_TOKEN_SECRET", "<ws-...>")]),
    ("Client (what `llmodal env --workspace WS --write .env` fills in)", [
        ("VLLM_BASE_URL", "https://WORKSPACE--vllm-llama70b-serve-vllm.modal.run/v1"),
        ("VLLM_API_KEY", "<the same key>")]),
]


def env_template() -> str:
    from llmodal.core.config import Settings

    out = ["# llmodal settings (.env). Uncomment what you change; the environment wins over this file.",
           "# The Modal secret `vllm-secrets` holds HUGGING_FACE_HUB_TOKEN, VLLM_SERVER_API_KEY and the proxy",
           "# token the gateway uses (MODAL_PROXY_TOKEN_ID, MODAL_PROXY_TOKEN_SECRET): README, Deploy on Modal.", ""]
    shown = set()
    for title, rows in GUIDE_LINES:
        out.append(f"# --- {title} ---")
        for name, value in rows:
            out.append(f"# {name}={value}")
            shown.add(name)
        out.append("")
    out.append("# --- Every other setting ---")
    for field in Settings.model_fields.values():
        extra = field.json_schema_extra or {}
        name = extra.get("env")
        if name and name not in shown:
            out.append(f"# {name}=  ({extra.get('allowed', '')})")
    return "\n".join(out) + "\n"
