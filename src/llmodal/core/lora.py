"""``VLLM_LORA_MODULES``: the adapters one server serves beside its base model, parsed and checked.

One entry per adapter, comma-separated: ``name=owner/repo`` (the hub's main branch, pinned to a commit
by ``llmodal download``), ``name=owner/repo@REVISION`` (a branch, a tag or a full 40-hex commit) or
``name=/a/folder`` (``./`` and ``~/`` too; a folder has no revision). ``name`` is what clients send as
``"model"``. Like ``vllm_flags`` this imports nothing of llmodal's, so ``config`` can validate with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# vLLM's LoRA ranks (its LoRAConfig refuses any other --max-lora-rank).
RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
FORMAT = ("name=owner/repo, name=owner/repo@REVISION (a branch, tag or full 40-hex commit) or name=/a/folder, "
          "comma-separated, names unique and not VLLM_MODEL's")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# A git ref (git check-ref-format's rules): no "..", "@{", "//"; no component starting with "." or ending
# in ".lock"; no trailing "/" or "."; characters the hub's branch and tag names use.
_REF = re.compile(r"^(?!.*\.\.)(?!.*@\{)(?!.*//)(?!.*/\.)(?!.*\.lock(?:/|$))(?!.*[/.]$)"
                  r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$")


@dataclass(frozen=True)
class Adapter:
    name: str  # what clients send as "model"
    source: str  # a hub repo id, or a folder (as written)
    revision: str | None = None  # hub only: branch, tag or commit

    @property
    def is_folder(self) -> bool:
        return _is_folder(self.source)

    @property
    def folder(self) -> Path:
        return Path(self.source).expanduser().resolve()

    @property
    def pinned(self) -> bool:
        return self.revision is not None and bool(_COMMIT.match(self.revision))

    def spelled(self) -> str:
        return f"{self.name}={self.source}" + (f"@{self.revision}" if self.revision else "")


def _is_folder(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~"))


def parse(text: str, base_model: str = "") -> list[Adapter]:
    """The adapters ``text`` lists; ValueError naming the entry and what is wrong with it."""
    out: list[Adapter] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            if text.strip():
                raise ValueError("an empty entry between commas")
            continue
        name, eq, source = entry.partition("=")
        name, source = name.strip(), source.strip()
        if not eq or not name or not source:
            raise ValueError(f"entry {entry!r} is not name=source")
        if not _NAME.match(name):
            raise ValueError(f"adapter name {name!r} is not a model name (letters, digits and . _ / : -, "
                             "starting with a letter or digit, at most 128 characters)")
        revision = None
        if _is_folder(source):
            if "@" in source and not Path(source).expanduser().exists():
                raise ValueError(f"{name}: {source!r} is a folder, which has no @revision (folders are served "
                                 "as they are)")
        else:
            source, at, rev = source.partition("@")
            if at and not rev:
                raise ValueError(f"{name}: {entry!r} has an empty revision after '@'")
            if not _REPO.match(source):
                raise ValueError(f"{name}: {source!r} is neither a hub repo id (owner/name) nor a folder (starting "
                                 "with /, ./, ../ or ~)")
            _check_repo_id(name, source)
            if at:
                _check_revision(name, rev)
                revision = rev
        if name in {a.name for a in out}:
            raise ValueError(f"adapter name {name!r} is listed twice")
        if base_model and name == base_model:
            raise ValueError(f"adapter name {name!r} is VLLM_MODEL's name: clients could not reach the base model; "
                             "name the adapter differently")
        out.append(Adapter(name, source, revision))
    return out


def _check_repo_id(name: str, repo: str) -> None:
    """The hub's own rule for a repo id (no "--" or "..", no leading/trailing "-" or ".", no ".git", at
    most 96 characters), so a typo stops here and not at download time."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise ValueError(f"{name}: {repo!r} is not a hub repo id: {e} Write it as the hub spells it "
                         "(owner/name, as in its URL)") from None


def _check_revision(name: str, revision: str) -> None:
    if re.fullmatch(r"[0-9a-fA-F]{7,39}", revision) and not re.fullmatch(r"[0-9]+", revision):
        raise ValueError(f"{name}: revision {revision!r} looks like a shortened commit; the hub takes the full "
                         "40-hex commit (or a branch or tag name)")
    if re.fullmatch(r"[0-9a-fA-F]{40}", revision) and not _COMMIT.match(revision):
        raise ValueError(f"{name}: commit {revision!r} must be lower-case hex")
    if not _REF.match(revision):
        raise ValueError(f"{name}: revision {revision!r} is not a branch, tag or full 40-hex commit (git's ref "
                         "rules: no '..', '//' or '@{', no part starting with '.' or ending in '.lock', no trailing "
                         "'/' or '.')")


def rank_slot(rank: int) -> int:
    """The smallest of vLLM's ranks that holds ``rank`` (ValueError above the largest)."""
    for r in RANKS:
        if r >= rank:
            return r
    raise ValueError(f"rank {rank} is above vLLM's largest LoRA rank, {RANKS[-1]}")
