"""The run folder's contract: how a run begins and ends, what every metrics.json holds, and how a folder is read back.

Low in the house (it imports only errors, paths, config and io): recipes, cards, the CHAI card, the Hub push, the
demos and `hf-medai evaluate` all read run folders through here.

- `begin_run`: resolve `--resume_from_checkpoint`, guard the folder, seed. `finish_run`: write run_config.yaml,
  check metrics.json holds the common core, then the steps a caller adds (cards, push, summary: hub.finish_run).
- `RunRecord`: the common core of metrics.json (recipe, kind, task, base_model, dataset, synthetic_data,
  data_report, splits, training, throughput, schema_version), built by every recipe through `run_record`.
  A recipe adds its own keys (its metrics, subgroups, ...) beside it.
- `load_run`, `card_sections`, `library_versions`: what readers of a finished folder need.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from hf_medai.errors import ConfigError, HfMedaiError
from hf_medai.io import last_complete_checkpoint, write_yaml

# 1: metrics.json as written before the record (no `kind`, no `schema_version`). 2: with both.
SCHEMA_VERSION = 2
# The kind of model each recipe trains (hf_medai/kinds/<kind>.py holds what the card, CHAI and demo say about it).
RECIPE_KINDS = {
    "lesion_classification": "lesion_classifier",
    "image_classification": "image_classifier",
    "clinical_outcomes": "note_outcome",
    "clinical_pretraining": "masked_lm",
    "medqa_lora": "qa_adapter",
    "image_diffusion": "image_generator",
    "molecule_diffusion": "molecule_generator",
    "lesion_fusion": "lesion_fusion",
    "clinical_fusion": "note_fusion",
    "image_pretraining": "masked_image_model",
}


# --- beginning a run ----------------------------------------------------------------------------------------------


class RunFolderExists(HfMedaiError, FileExistsError):
    exit_code = 2


def prepare_run_folder(output_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """Refuse to write into a run folder that already holds results unless asked to.

    `resume`: the user asked to continue from a checkpoint in it. `overwrite`: start afresh and replace it.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not resume:
        if overwrite:
            shutil.rmtree(output_dir)
        else:
            has_ckpt = any(p.name.startswith("checkpoint-") for p in output_dir.iterdir())
            hint = " or --resume_from_checkpoint last to continue it" if has_ckpt else ""
            raise RunFolderExists(
                f"output_dir {output_dir} already holds a run; pass a new --output_dir, "
                f"--overwrite_output_dir true to replace it{hint}"
            )
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


def begin_run(training_args, run_args, stages: Sequence[str] = ()) -> tuple[str | None, bool]:
    """What every recipe does first: resolve `--resume_from_checkpoint`, guard the run folder, seed.

    Returns (checkpoint to resume from or None, whether the user asked to push). The push request is taken
    off `training_args` because `Trainer` would push on every save, past the Hub gates; recipes push the
    finished folder through `hf_medai.hub` instead. `stages`: sub-folders where earlier stages of the run keep
    their own checkpoints (a fusion run's ablation/); `--resume_from_checkpoint last` on a run interrupted there
    returns None here and leaves the resuming to that stage.
    """
    from transformers import set_seed

    push, training_args.push_to_hub = training_args.push_to_hub, False
    resume = training_args.resume_from_checkpoint
    output_dir = training_args.output_dir
    if resume in ("last", "true", "True"):
        resume, skipped = last_complete_checkpoint(output_dir)
        if skipped and training_args.process_index == 0:
            print(
                f"hf-medai: --resume_from_checkpoint last: skipped incomplete {'; '.join(skipped)}"
                f"{f'; resuming from {resume}' if resume else ''}",
                file=sys.stderr,
            )
        if resume is None and any((Path(output_dir) / stage).is_dir() for stage in stages):
            # interrupted in an earlier stage (it has its own checkpoints): that stage resumes, this one starts afresh
            if training_args.process_index == 0:
                prepare_run_folder(output_dir, resume=True, overwrite=False)
            set_seed(training_args.seed)
            return None, push
        if resume is None:
            raise ConfigError(
                f"--resume_from_checkpoint last: no complete checkpoint-* folder in {output_dir}"
                + (f" (incomplete: {'; '.join(skipped)})" if skipped else "")
            )
    elif resume and not Path(resume).is_dir():
        raise ConfigError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
    if training_args.process_index == 0:
        prepare_run_folder(output_dir, resume=bool(resume), overwrite=run_args.overwrite_output_dir)
    set_seed(training_args.seed)
    return resume, push


# --- the common core of metrics.json ------------------------------------------------------------------------------


@dataclasses.dataclass
class RunRecord:
    """What every run's metrics.json holds, whatever the model. None fields are left out of metrics.json."""

    recipe: str
    task: str  # the pipeline task (`image-classification`, `text-classification`, `fill-mask`, ...)
    kind: str | None = None  # the kind of model (RECIPE_KINDS); None only in folders older than the record
    base_model: str | None = None
    dataset: str | None = None
    synthetic_data: bool | None = None
    data_report: dict | None = None  # rows read, skipped and why (hf_medai.data.report.DataReport.to_dict())
    splits: dict | None = None
    training: dict = dataclasses.field(default_factory=dict)  # global_step, loss_curve, resumed_from, ...
    throughput: dict = dataclasses.field(default_factory=dict)  # samples/s of training alone, peak memory, device
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, metrics: dict[str, Any]) -> RunRecord:
        """The core of a metrics.json (other keys are ignored). A folder written before the record has no `kind`
        (taken from its recipe) and no `schema_version` (1)."""
        missing = [k for k in ("recipe", "task") if k not in metrics]
        if missing:
            raise ValueError(f"metrics.json lacks {', '.join(missing)}: not written by an hf-medai recipe")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in metrics.items() if k in names and v is not None}
        values.setdefault("kind", RECIPE_KINDS.get(metrics["recipe"]))
        values.setdefault("schema_version", 1)
        return cls(**values)


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def peak_memory_mb() -> dict[str, float]:
    """Peak accelerator memory (allocated by torch) if there is one, and the process's peak RSS."""
    import resource

    import torch

    out: dict[str, float] = {}
    if torch.cuda.is_available():
        out["peak_accelerator_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out["peak_rss_mb"] = round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)
    return out


def run_record(
    recipe: str,
    task: str,
    *,
    kind: str | None = None,
    trainer=None,
    train_result=None,
    resumed_from=None,
    loop=None,
    throughput=None,
    model=None,
    training: dict | None = None,
    extra_throughput: dict | None = None,
    **core: Any,
) -> RunRecord:
    """The common core of a recipe's metrics.json, measured the same way for every recipe.

    `kind`: the kind of model (default: the recipe's, RECIPE_KINDS; a new recipe names its own).
    A `Trainer` run: `trainer`, its `train_result` (TrainOutput), `resumed_from` (begin_run's checkpoint) and
    `throughput` (the run's hf_medai.throughput.ThroughputCallback). A run of hf_medai.training.train_loop: `loop`
    (its LoopResult, which measured its own throughput). `model`: count its parameters into training. `training` and
    `extra_throughput` add the recipe's own entries; `core`: base_model, dataset, synthetic_data, data_report, splits.
    """
    if loop is not None:
        facts = {
            "global_step": loop.global_step,
            "loss_curve": loop.loss_curve,
            "resumed_from": loop.resumed_from,
            "ema_decay": loop.ema_decay,
        }
        measured = dict(loop.throughput)
    else:
        facts = {
            "global_step": trainer.state.global_step,
            "train_loss": train_result.training_loss,
            "resumed_from": str(resumed_from) if resumed_from else None,
            "loss_curve": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        }
        measured = {
            **throughput.summary(trainer.args.world_size),
            **peak_memory_mb(),
            "device": str(trainer.args.device),
        }
    if model is not None:
        facts["num_parameters"] = num_parameters(model)
    if kind is None and recipe not in RECIPE_KINDS:
        raise ValueError(f"run_record: recipe {recipe!r} has no kind in RECIPE_KINDS; pass kind=")
    return RunRecord(
        recipe=recipe,
        kind=kind or RECIPE_KINDS[recipe],
        task=task,
        training={**facts, **(training or {})},
        throughput={**measured, **(extra_throughput or {})},
        **core,
    )


# --- ending a run -------------------------------------------------------------------------------------------------


def finish_run(output_dir: str | Path, config: dict, steps: Iterable[Callable[[Path], object]] = ()) -> Path:
    """Write run_config.yaml (the fully resolved config), check that metrics.json holds the common core, then run
    `steps` on the folder in order (hub.finish_run passes: the cards, the push, the summary)."""
    output_dir = Path(output_dir)
    write_yaml(output_dir / "run_config.yaml", config)
    metrics_file = output_dir / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{output_dir}: the recipe wrote no metrics.json")
    RunRecord.from_dict(json.loads(metrics_file.read_text()))
    for step in steps:
        step(output_dir)
    return output_dir


# --- reading a finished run folder --------------------------------------------------------------------------------


def load_run(run_dir: str | Path) -> tuple[dict, dict]:
    """(metrics.json, run_config.yaml) of a run folder. metrics["kind"] is filled in from the recipe for a folder
    written before metrics.json recorded it."""
    run_dir = Path(run_dir)
    metrics_path, config_path = run_dir / "metrics.json", run_dir / "run_config.yaml"
    for p in (metrics_path, config_path):
        if not p.is_file():
            raise FileNotFoundError(f"{run_dir} is not a complete run folder: {p.name} is missing")
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("kind") is None and metrics.get("recipe") in RECIPE_KINDS:
        metrics["kind"] = RECIPE_KINDS[metrics["recipe"]]
    return metrics, yaml.safe_load(config_path.read_text()) or {}


_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*$", re.MULTILINE)


def card_sections(markdown: str) -> dict[str, str]:
    """Lower-cased heading -> text under it (down to the next heading of the same or a higher level)."""
    heads = list(_HEADING.finditer(markdown))
    out = {}
    for i, h in enumerate(heads):
        level = len(h.group(1))
        end = next((n.start() for n in heads[i + 1 :] if len(n.group(1)) <= level), len(markdown))
        out.setdefault(h.group(2).strip().lower(), markdown[h.end() : end].strip())
    return out


LIBRARIES = (
    "transformers",
    "diffusers",
    "torch",
    "datasets",
    "accelerate",
    "evaluate",
    "fairlearn",
    "scikit-learn",
    "rdkit",
)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a run depends on ("n/a" when one is not installed), for the cards."""
    out = {}
    for pkg in LIBRARIES:
        try:
            out[pkg.replace("-", "_")] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "n/a"
    return out


def cached_default_run(recipe_file: str | Path, name: str) -> Path:
    """A recipe's offline default run, made once into `cache_root()/pretrained/<name>` and reused (an encoder other
    recipes start from); an interrupted run resumes from its last checkpoint. Returns the run folder."""
    from accelerate import PartialState

    from hf_medai.paths import cache_root

    folder = cache_root() / "pretrained" / name
    if (folder / "metrics.json").is_file():
        return folder
    recipe_file = Path(recipe_file)
    recipe = load_recipe_module(recipe_file)
    partial = folder.with_name(folder.name + ".partial")
    again = (
        ["--resume_from_checkpoint", "last"]
        if any(partial.glob("checkpoint-*"))
        else ["--overwrite_output_dir", "true"]
    )
    print(f"hf-medai: making the offline default's {name} once ({recipe_file.name}'s default run) in {folder}")
    recipe.main(["--output_dir", str(partial), *again])
    state = PartialState()
    if state.is_main_process:
        partial.rename(folder)
    state.wait_for_everyone()
    return folder


def load_recipe_module(recipe_file: str | Path):
    """A recipe file imported as a module (its `main` takes the flags it takes on the command line)."""
    import importlib.util

    recipe_file = Path(recipe_file)
    spec = importlib.util.spec_from_file_location(recipe_file.stem, recipe_file)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module
