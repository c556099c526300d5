"""What llmodal keeps between runs on this machine: the local server's key and address."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from platformdirs import user_cache_dir, user_config_dir


def config_dir() -> Path:
    return Path(os.environ.get("LLMODAL_CONFIG_DIR") or user_config_dir("llmodal"))


def cache_dir() -> Path:
    return Path(os.environ.get("LLMODAL_CACHE_DIR") or user_cache_dir("llmodal"))


def local_api_key() -> tuple[str, bool]:
    """The key for local servers with no VLLM_SERVER_API_KEY: (key, newly_created).

    Kept in a 0600 file so it survives restarts and the client's .env stays valid."""
    path = config_dir() / "local-api-key"
    if path.is_file():
        key = path.read_text().strip()
        if key:
            return key, False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "llmodal-" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key, True


def save_local_server(base_url: str, model: str) -> None:
    path = cache_dir() / "local-server.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"base_url": base_url, "model": model}))


def last_local_server() -> dict[str, str]:
    path = cache_dir() / "local-server.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
