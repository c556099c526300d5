"""Which checkpoints the planner may use for a model: the catalog's, the hub's model tree, or a pin.

The catalog answers offline. A model it does not know (or ``llmodal plan --discover``) is looked
up in the hub's model tree (``hub.discover``) when the hub answers; its ranking replaces the
catalog's pick per format. ``VLLM_CHECKPOINT`` pins one build and skips the choice, after checking
it is a build of the same model (architecture and shape).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from llmodal.core.errors import PlanError


def model_facts(model: str, revision: str | None, checkpoint: str | None, discover: bool):
    """(spec, discovery): the model's shape with the checkpoints the planner may use."""
    from llmodal.plan.catalog import CATALOG, canonical, lookup

    spec = lookup(model, revision)
    if checkpoint:
        pinned = lookup(checkpoint)
        arch_differs = pinned.arch and spec.arch and pinned.arch != spec.arch
        if arch_differs or (pinned.layers, pinned.hidden, pinned.experts) != (spec.layers, spec.hidden, spec.experts):
            raise PlanError(f"VLLM_CHECKPOINT={checkpoint!r} is not a build of {model}: it is "
                            f"{pinned.arch or 'a model'} with {pinned.layers} layers × {pinned.hidden}, the model is "
                            f"{spec.arch or 'a model'} with {spec.layers} × {spec.hidden}")
        if pinned.quant == spec.quant:  # same weight format: plan the pinned repo as the model itself
            return replace(spec, name=checkpoint, checkpoints={}), None
        return replace(spec, checkpoints={pinned.quant: checkpoint}), None
    if Path(model).expanduser().is_dir() or (canonical(model) in CATALOG and not discover):
        return spec, None  # a local directory is what it is; the catalog answers without the hub
    from llmodal.plan.hub import discover as read_tree
    from llmodal.plan.model_config import fetch_config

    cfg = fetch_config(model, revision)
    found = read_tree(model, cfg) if cfg else None
    if found is None:
        return spec, None  # offline: the catalog (or the model's own config) is all there is
    # The hub's ranking replaces the catalog's picks where it found a build of that format.
    return replace(spec, checkpoints={**spec.checkpoints, **found.best()}), found
