"""Kinds of model: one module each, declaring in one place what every report and demo says about such a model.

    from hf_medai.kinds import get_kind, kind_of, register_kind

    kind_of(json.load(open("runs/x/metrics.json")))  # metrics.json["kind"]; older run folders: their recipe/task
    get_kind("image_classifier").chai.population
    register_kind(Kind(name="my_kind", ...))        # a new kind: card template, CHAI facts, TRIPOD cells, demo

A new kind of model adds one module here (a `KIND = Kind(...)`, listed in BUILTIN below) and its card template in
hf_medai/model_cards/; its recipe writes `"kind": "<name>"` into metrics.json. Nothing else keys on the task.
"""

from __future__ import annotations

from hf_medai.kinds import (
    image_classifier,
    image_generator,
    lesion_classifier,
    lesion_fusion,
    masked_image_model,
    masked_lm,
    molecule_generator,
    note_fusion,
    note_outcome,
    qa_adapter,
)
from hf_medai.kinds.base import ChaiFacts, Kind, all_kinds, get_kind, kind_of, register_kind

# Old run folders with only a pipeline task (no "kind", no recipe) were written by the first kind listed for it.
BUILTIN = [
    lesion_classifier.KIND,
    image_classifier.KIND,
    note_outcome.KIND,
    masked_lm.KIND,
    qa_adapter.KIND,
    image_generator.KIND,
    molecule_generator.KIND,
    lesion_fusion.KIND,
    note_fusion.KIND,
    masked_image_model.KIND,
]
for _kind in BUILTIN:
    register_kind(_kind, legacy_task=_kind.task not in {k.task for k in BUILTIN[: BUILTIN.index(_kind)]})

__all__ = ["BUILTIN", "ChaiFacts", "Kind", "all_kinds", "get_kind", "kind_of", "register_kind"]
