"""Which files of a hub checkpoint vLLM 0.32 loads, so ``download`` puts exactly those in the volume and the
container, offline, makes vLLM load them.

Read from vLLM's source (model_loader/default_loader.py ``_prepare_weights``, transformers_utils/config.py
``get_config``, transformers_utils/repo_utils.py ``list_repo_files``). Two facts shape all of it:
- online, vLLM lists the repo: a checkpoint with ``consolidated*.safetensors`` (Mistral's own layout, beside the
  HF shards in mistralai/Mistral-7B-Instruct-v0.3, Mistral-Large-Instruct-2411) is loaded as "mistral": only those
  files, and its config from params.json when it has one;
- offline (the container, once the pinned weights are in the volume) the listing is empty, so vLLM chooses "hf":
  it asks huggingface_hub for every ``*.safetensors`` of the repo, and huggingface_hub 2.4 refuses a cached
  snapshot missing any of them (IncompleteSnapshotError).
So for that layout ``download`` fetches the consolidated copy only and the container passes vLLM the formats it
chose online (``vllm_formats``, rows of core/vllm_flags.py): one copy in the volume (Mistral-Large: ~245 GB, not
twice that), and offline vLLM loads what it loads online.
"""

from __future__ import annotations

import fnmatch
import glob
import posixpath
from collections.abc import Iterable

# The weight formats vLLM loads from an HF-layout checkpoint, in its order (load_format "hf": "*.safetensors",
# "*.bin", then "*.pt"): the first one present among the repo's top-level files and nothing else. `weights_cached`
# looks for that format, so a checkpoint published only as .bin is pinned once its .bin files are in the volume.
WEIGHT_FORMATS = ("*.safetensors", "*.bin", "*.pt")
# Mistral's layout: vLLM's load_format "mistral" asks for these alone (and names them in
# consolidated.safetensors.index.json when sharded, which download keeps as it keeps every non-weight file).
MISTRAL_WEIGHTS = "consolidated*.safetensors"
MISTRAL_CONFIG = "params.json"
# Offline, vLLM asks huggingface_hub for each format in that order up to the one it loads, with its own ignore
# patterns (LoadConfig.ignore_patterns: "original/**/*"), and huggingface_hub refuses a cached snapshot missing any
# file of the repo that request matches. So `download` leaves out only what that request never matches: the formats
# after the one vLLM loads, Meta's consolidated *.pth, vLLM's own ignore. A .bin checkpoint with another build's
# safetensors in a folder keeps that folder's safetensors; a checkpoint with both formats at the top never gets its
# .bin.
NOT_LOADED = ("original/**/*", "*.pth")
# What vLLM drops from the chosen format's files as not weights (filter_files_not_needed_for_inference): it picks the
# format first, so .pt weights beside the Trainer's training_args.bin leave it nothing to load.
NOT_WEIGHTS = ("training_args.bin", "optimizer.bin", "optimizer.pt", "scheduler.pt", "scaler.pt")


def vllm_formats(files: Iterable[str]) -> dict[str, str]:
    """vLLM's flags (without dashes) for what it chooses online, by itself, for a checkpoint holding ``files``
    (repo paths), where offline it would choose otherwise; empty for an HF-layout checkpoint. vLLM's test: any file
    whose name (in any folder) matches consolidated*.safetensors (repo_utils.is_mistral_model_repo)."""
    files = list(files)
    if not any(fnmatch.fnmatch(posixpath.basename(f), MISTRAL_WEIGHTS) for f in files):
        return {}
    # get_config: config_format "mistral" where the repo is Mistral's and has params.json at its top
    return {"load-format": "mistral", **({"config-format": "mistral"} if MISTRAL_CONFIG in files else {})}


# What a dry run, which cannot see the volume, says of the flags above (the container decides from the pinned snapshot).
FORMAT_NOTES = {"--load-format mistral": f"added where the pinned checkpoint has {MISTRAL_WEIGHTS} (Mistral's layout: "
                                         "vLLM picks it by itself online, not offline)",
                "--config-format mistral": f"added beside it where that checkpoint has {MISTRAL_CONFIG} at its top"}


def weight_format(files: Iterable[str]) -> str | None:
    """The pattern of the weights vLLM loads from a checkpoint holding ``files`` (repo paths); None: vLLM finds none."""
    files = list(files)
    top = [f for f in files if "/" not in f]
    if vllm_formats(files):
        return MISTRAL_WEIGHTS if fnmatch.filter(top, MISTRAL_WEIGHTS) else None
    pat = next((pat for pat in WEIGHT_FORMATS if fnmatch.filter(top, pat)), None)
    return pat if pat and any(not f.endswith(NOT_WEIGHTS) for f in fnmatch.filter(top, pat)) else None


def download_ignore(files: Iterable[str]) -> list[str]:
    """``snapshot_download``'s ignore_patterns for a checkpoint holding ``files``: the weight formats vLLM never asks
    for offline (those after the one it loads), and what it ignores itself. In Mistral's layout vLLM asks for the
    consolidated files alone, so every other safetensors file (the HF shards: a second copy) is left out by name."""
    files = list(files)
    keep = weight_format(files)
    if keep == MISTRAL_WEIGHTS:
        # snapshot_download matches a pattern against the whole path, as vLLM's request does offline
        shards = [glob.escape(f) for f in files if f.endswith(".safetensors") and not fnmatch.fnmatch(f, MISTRAL_WEIGHTS)]
        return [*NOT_LOADED, "*.bin", "*.pt", *shards]
    asked = WEIGHT_FORMATS[:WEIGHT_FORMATS.index(keep) + 1] if keep else ()
    return [*NOT_LOADED, *(pat for pat in WEIGHT_FORMATS if pat not in asked)]
