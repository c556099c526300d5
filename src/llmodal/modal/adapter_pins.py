"""Adapters on the hub pinned to commits for a deployment: what ``download`` puts in the volume and what
``deploy`` serves are the same bytes.

``llmodal download`` resolves every hub adapter's revision (a branch or tag, ``main`` when none is
written) to the commit it names now, records it on this machine and hands the container
``VLLM_LORA_MODULES`` with those commits; ``llmodal deploy`` hands over the commits ``download`` recorded
(resolving, and recording, only an adapter never downloaded), and ``deploy --dry-run`` shows those commits
the same way. The container then serves each adapter from
its snapshot at that commit, offline, like the base. A folder on this machine is not in the container:
deploying one is refused.
"""

from __future__ import annotations

import json

from llmodal.core.errors import PreflightError
from llmodal.core.lora import Adapter
from llmodal.core.state import cache_dir

PINS = "adapter-pins.json"


def _key(a: Adapter) -> str:
    return f"{a.source}@{a.revision or 'main'}"


def _recorded() -> dict[str, str]:
    try:
        return json.loads((cache_dir() / PINS).read_text())
    except (OSError, ValueError):
        return {}


def _record(pins: dict[str, str]) -> None:
    path = cache_dir() / PINS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(pins, indent=2, sort_keys=True))
    tmp.replace(path)


def pinned_modules(adapters: list[Adapter], *, fresh: bool) -> str | None:
    """``VLLM_LORA_MODULES`` with every hub adapter at a full commit, or None when there is no adapter.
    ``fresh`` (download): ask the hub for each revision's commit now; else reuse what download recorded."""
    if not adapters:
        return None
    return ",".join(a.spelled() for a, _ in pin(adapters, fresh=fresh))


def pin(adapters: list[Adapter], *, fresh: bool) -> list[tuple[Adapter, str]]:
    """Each adapter at the commit a deploy sends, and where that commit came from (what a dry run shows). A commit
    resolved here is recorded, so the deploy that follows sends the very commit shown."""
    folders = [a for a in adapters if a.is_folder]
    if folders:
        raise PreflightError(f"VLLM_LORA_MODULES: adapter {folders[0].name!r} is a folder on this machine "
                             f"({folders[0].source}), which the container does not have: push it to the hub "
                             "(huggingface-cli upload) and list it as name=owner/repo")
    pins = _recorded()
    out = []
    for a in adapters:
        if a.pinned:
            commit, how = a.revision, "written as a commit"
        elif not fresh and _key(a) in pins:
            commit = pins[_key(a)]
            how = f"{a.revision or 'main'} as recorded here (llmodal download, deploy or a dry run)"
        else:
            commit = pins[_key(a)] = _resolve(a)
            how = f"{a.revision or 'main'} as the hub named it now; recorded, so deploy sends this commit"
        out.append((Adapter(a.name, a.source, commit), how))
    _record(pins)
    return out


def _resolve(a: Adapter) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        sha = HfApi().model_info(a.source, revision=a.revision, timeout=10).sha
    except RevisionNotFoundError:
        raise PreflightError(f"VLLM_LORA_MODULES: adapter {a.name!r}: {a.source} has no revision "
                             f"{a.revision!r}") from None
    except RepositoryNotFoundError:
        raise PreflightError(f"VLLM_LORA_MODULES: adapter {a.name!r}: {a.source} does not exist on the hub (or "
                             "needs HUGGING_FACE_HUB_TOKEN)") from None
    except Exception as e:  # noqa: BLE001 - offline, timeouts: say so, send nothing
        raise PreflightError(f"VLLM_LORA_MODULES: adapter {a.name!r}: the hub did not say which commit "
                             f"{a.source}@{a.revision or 'main'} is ({type(e).__name__}); nothing was sent. Pin it "
                             "yourself as name=owner/repo@<40-hex commit>") from None
    if not sha:
        raise PreflightError(f"VLLM_LORA_MODULES: adapter {a.name!r}: the hub gave no commit for {a.source}")
    return sha
