"""The client's ``.env``: read it, write it without touching other lines, mask keys for display."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from dotenv import dotenv_values

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def mask(secret: str | None) -> str:
    """Show a key's last 4 characters at most, and only when it is long enough not to leak."""
    if not secret:
        return "(none)"
    return "****" + secret[-4:] if len(secret) >= 16 else "****"


def read_env(path: str | os.PathLike[str]) -> dict[str, str]:
    p = Path(path)
    if not p.is_file():
        return {}
    return {k: v for k, v in dotenv_values(p).items() if v is not None}


def _quote(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:@+*-]*", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(values: dict[str, str]) -> str:
    return "".join(f"{k}={_quote(v)}\n" for k, v in values.items())


def write_env(path: str | os.PathLike[str], values: dict[str, str]) -> Path:
    """Set ``values`` in the file at ``path``: replace those keys' lines, keep every other line as
    it was, append new keys. Written atomically, readable by the owner only (it holds a key)."""
    p = Path(path)
    old = p.read_text().splitlines(keepends=True) if p.exists() else []
    pending = dict(values)
    out: list[str] = []
    for line in old:
        m = _LINE.match(line)
        if m and m.group(1) in values:
            if m.group(1) in pending:
                out.append(f"{m.group(1)}={_quote(pending.pop(m.group(1)))}\n")
            continue  # a duplicate of a key we set: drop it so the file has one truth
        out.append(line)
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out.append(render(pending))
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".env.", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write("".join(out))
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
