"""What a kind of model declares (`Kind`), and the registry that `metrics.json["kind"]` selects from.

A kind is the unit a contributor adds: one module in hf_medai/kinds/ with one `Kind(...)`, and a card template in
hf_medai/model_cards/. The renderers (`cards`, `chai`, `tripod`) and `hf-medai demo` read everything they say
about a model from its kind; none of them keys on the pipeline task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_medai.run_folder import RECIPE_KINDS

Context = Callable[[dict, dict, Path], dict]  # (metrics, run config, run folder) -> the template's own variables
Results = list[tuple[str, dict]]  # (label, ValueJson object) per CHAI MetricResult

NO_SUBGROUPS = "the data had no subgroup columns, so performance across groups is unknown"
PATIENT_SPLITS = (
    "Splits by patient: no patient's data in two splits, so test numbers are not inflated by near-duplicates."
)


@dataclass(frozen=True)
class ChaiFacts:
    """What the CHAI Applied Model Card says about every model of a kind (the rest comes from the run)."""

    outputs: str  # OutcomesAndOutputs
    io: str  # OutputAndInputDataTypes
    population: str  # TargetedPatientPopulation
    risk: str  # ClinicalRiskLevel
    usefulness: tuple[tuple[str, str], ...] = ()  # (metrics.json key, label): UsefulnessUsabilityEfficacy
    safety: tuple[tuple[str, str], ...] = ()  # (metrics.json key, label): SafetyReliability
    fairness: Callable[[dict], Results] | None = None  # FairnessEquity results from metrics.json
    no_fairness: str = NO_SUBGROUPS  # why FairnessEquity is empty, when `fairness` finds nothing
    splits: str | None = PATIENT_SPLITS  # how the splits keep patients apart (BiasMitigationApproaches), if they do
    bias_steps: tuple[str, ...] = ()  # the kind's own mitigation steps, after the run's
    generative: bool = False  # tested on generated samples, not on a held-out split


@dataclass(frozen=True)
class Kind:
    """One kind of model: everything the card, the CHAI card, the TRIPOD table and the demo need to know."""

    name: str
    task: str  # the pipeline task (metrics.json "task", the Hub's task type)
    template: str  # card template: a file in hf_medai/model_cards/, or the name of `template_text`
    context: Context  # the template's own variables; the shared ones come from cards.render_card
    chai: ChaiFacts
    tripod: dict[int, str] | None = None  # TRIPOD+AI cells of this kind's card (None: not a prediction model)
    metric_keys: tuple[str, ...] = ()  # headline metrics.json keys (the Hub model-index's eval results)
    demo: tuple[str, str] | None = None  # (module, class) of its Gradio app, imported only when a demo starts
    # (module, function) of its robustness audit, imported only when one runs: (model_dir, data, data_format,
    # skip_bad_rows) -> metrics.json "robustness" sections; data None = the run's own test split (hf_medai.audits)
    audit: tuple[str, str] | None = None
    template_text: str | None = None  # the template itself, for a kind defined outside the package
    extra: dict[str, Any] = field(default_factory=dict)  # anything else a kind's own template or demo reads


_REGISTRY: dict[str, Kind] = {}
# Run folders written before metrics.json had "kind": their pipeline task -> the kind they were.
_LEGACY_TASKS: dict[str, str] = {}


def register_kind(kind: Kind, replace: bool = False, legacy_task: bool = False) -> Kind:
    """Add `kind` to the registry; `legacy_task`: old run folders of its task without a recipe are of this kind."""
    if kind.name in _REGISTRY and not replace and _REGISTRY[kind.name] is not kind:
        raise ValueError(f"a kind named {kind.name!r} is already registered (pass replace=True to replace it)")
    _REGISTRY[kind.name] = kind
    if legacy_task:
        _LEGACY_TASKS[kind.task] = kind.name
    return kind


def get_kind(name: str) -> Kind:
    if name not in _REGISTRY:
        raise ValueError(f"no kind of model named {name!r}; known kinds: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def kind_of(metrics: dict) -> Kind:
    """The kind of a run folder, from its metrics.json: "kind", else (folders from before "kind") its recipe, else
    its pipeline task."""
    if metrics.get("kind"):
        return get_kind(metrics["kind"])
    recipe = metrics.get("recipe")
    if recipe in RECIPE_KINDS:
        return get_kind(RECIPE_KINDS[recipe])
    task = metrics.get("task")
    if task in _LEGACY_TASKS:
        return get_kind(_LEGACY_TASKS[task])
    raise ValueError(
        f'metrics.json has no "kind" and its recipe {recipe!r} / task {task!r} name no known kind; '
        f"known kinds: {sorted(_REGISTRY)}"
    )


def all_kinds() -> list[Kind]:
    return list(_REGISTRY.values())
