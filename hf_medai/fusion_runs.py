"""What both fusion recipes share (recipes/lesion_fusion.py: image + metadata; recipes/clinical_fusion.py: note +
structured EHR): train a model with the Trainer, score it, train the single-modality baselines in the same run on
the same split, and write the ablation into the fused model's report.

    resume, push = begin_run(training_args, run_args, stages=[ABLATION_DIR])  # resumes in whichever stage
    stages = train_stages(backbone, "image", "image_only", schema, splits, collators, training_args, class_names,
                          columns, model_args, resume, resuming)  # image-only model, then the fused one from it
    write_fusion_report(model, processor, stages, splits, frames, schema, ...)  # hf_medai.fusion_report

A baseline lives in `<output_dir>/ablation/<name>/` (its model, checkpoints and `scores.npz`): a resumed run
reuses a finished baseline's scores and resumes an unfinished one from its last complete checkpoint. The
single-modality model trains first and the fused model starts from its backbone: the fused model then measures what
the tabular features add to that model. Started from the same random or pretrained backbone instead, the fused model
learned the easy tabular signal first and left its image pathway weak (lesion sample: 0.71 test AUROC with the
metadata withheld, vs 0.86 for the image-only model), a known failure of joint multimodal training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from hf_medai.data.tabular import KEYS, TabularCollator, TabularSchema
from hf_medai.image_classification import selection_metrics
from hf_medai.io import last_complete_checkpoint, save_pretrained_atomic
from hf_medai.models.heads import class_weighted_loss, fold_into_head, prior_correction
from hf_medai.models.text import softmax
from hf_medai.throughput import ThroughputCallback
from hf_medai.trainer import MedTrainer

ABLATION_DIR = "ablation"


@dataclass
class FusionArguments:
    fusion: Literal["late", "film", "cross_attention"] = field(
        default="late",
        metadata={
            "help": "late (concat + MLP) | film (tabular features scale and shift the primary) | cross_attention."
        },
    )
    fusion_dim: int = field(default=128, metadata={"help": "Width of the fused representation and head."})
    modality_dropout: float = field(
        default=0.15,
        metadata={"help": "Training: chance per example of dropping the tabular features (and, again, the primary)."},
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the layers around the backbone (tabular encoder, fusion, head); default: "
            "--learning_rate. Fresh layers on a pretrained backbone train better faster (e.g. 10x)."
        },
    )
    class_balance: Literal["weighted_loss", "none"] = field(
        default="weighted_loss",
        metadata={"help": "weighted_loss (inverse frequency; its prior shift is undone in the saved head) | none."},
    )
    baselines: bool = field(
        default=True,
        metadata={"help": "Also train the single-modality model and the gradient-boosting baseline (ablation)."},
    )
    start_from_single_modality: bool = field(
        default=True,
        metadata={
            "help": "The fused model's backbone starts from the single-modality model trained first in the run "
            "(needs baselines); false: from the backbone given."
        },
    )


class FusionTrainer(MedTrainer):
    """MedTrainer whose optimizer gives the layers around the backbone their own learning rate (the schedule scales
    both groups alike)."""

    head_learning_rate: float | None = None

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.head_learning_rate is None:
            return optimizer
        backbone = {id(p) for p in (self.model if model is None else model).backbone.parameters()}
        groups = [
            {**g, "params": params, "lr": g["lr"] if in_backbone else self.head_learning_rate}
            for g in optimizer.param_groups
            for in_backbone in (True, False)
            if (params := [p for p in g["params"] if (id(p) in backbone) == in_backbone])
        ]
        optimizer.param_groups.clear()
        for group in groups:
            optimizer.add_param_group(group)
        return optimizer


@dataclass
class Fitted:
    trainer: MedTrainer | None
    train_result: Any
    scores: dict[str, np.ndarray]  # split -> (n, K) probabilities (prior shift of a class-weighted loss undone)
    throughput: ThroughputCallback | None = None
    shift: np.ndarray | None = None  # the logit shift folded into the saved head


def fusion_trainer(
    model,
    splits,
    collators,
    training_args,
    class_names,
    columns,
    callbacks=(),
    class_balance="weighted_loss",
    head_learning_rate=None,
) -> MedTrainer:
    """The Trainer of one model of the ablation. `collators`: (evaluation, training) collators of the primary input;
    the tabular arrays are stacked around them when the data has them. `class_balance="weighted_loss"`: inverse-
    frequency class weights in the loss; `trainer.shift` (the prior correction) gives the scores back the data's
    class frequencies."""
    counts = np.bincount(np.asarray(splits["train"]["label"]), minlength=len(class_names)).astype(float)
    weighted = class_balance == "weighted_loss"
    evaluation, training = collators
    tabular = KEYS[0] in splits["train"].column_names
    wrap = TabularCollator if tabular else (lambda c: c)
    keep = [c for c in (*columns, *(KEYS if tabular else ())) if c in splits["train"].column_names]
    throughput = ThroughputCallback(tokens_per_sample=_mean_tokens(splits["train"]))
    trainer = FusionTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"].select_columns(keep),
        eval_dataset=splits["validation"].select_columns(keep),
        data_collator=wrap(evaluation),
        train_data_collator=wrap(training) if training is not None else None,
        compute_loss_func=class_weighted_loss(counts) if weighted else None,
        compute_metrics=selection_metrics(class_names),
        callbacks=[throughput, *callbacks],
    )
    trainer.throughput, trainer.keep_columns, trainer.head_learning_rate = throughput, keep, head_learning_rate
    trainer.shift = prior_correction(counts) if weighted else np.zeros(len(class_names))
    return trainer


def _mean_tokens(ds) -> float | None:
    if "input_ids" not in ds.column_names:
        return None
    return float(np.mean([len(x) for x in ds["input_ids"]]))


def predict(trainer: MedTrainer, dataset) -> np.ndarray:
    columns = [c for c in trainer.keep_columns if c in dataset.column_names]
    columns += [c for c in ("primary_absent",) if c in dataset.column_names]
    return softmax(np.asarray(trainer.predict(dataset.select_columns(columns)).predictions) + trainer.shift)


def fit_and_score(
    model,
    splits,
    collators,
    training_args,
    class_names,
    columns,
    resume=None,
    callbacks=(),
    class_balance="weighted_loss",
    head_learning_rate=None,
) -> Fitted:
    """Train (or resume) and score validation and test with the kept checkpoint."""
    trainer = fusion_trainer(
        model, splits, collators, training_args, class_names, columns, callbacks, class_balance, head_learning_rate
    )
    result = trainer.train(resume_from_checkpoint=resume)
    scores = {name: predict(trainer, splits[name]) for name in ("validation", "test")}
    return Fitted(trainer, result, scores, trainer.throughput, trainer.shift)


def baseline_scores(
    name: str,
    build: Callable[[], Any],
    splits,
    collators,
    training_args,
    class_names,
    columns,
    resume: bool = False,
    class_balance: str = "weighted_loss",
    callbacks=(),
    head_learning_rate: float | None = None,
) -> Fitted:
    """A single-modality model of the ablation, trained like the fused one into `<output_dir>/ablation/<name>`."""
    folder = Path(training_args.output_dir) / ABLATION_DIR / name
    done = folder / "scores.npz"
    if resume and done.is_file():
        saved = np.load(done)
        return Fitted(None, None, {k: saved[k] for k in saved.files})
    args = copy.copy(training_args)
    args.output_dir = str(folder)
    checkpoint = last_complete_checkpoint(folder)[0] if resume and folder.is_dir() else None
    fitted = fit_and_score(
        build(),
        splits,
        collators,
        args,
        class_names,
        columns,
        checkpoint,
        callbacks,
        class_balance,
        head_learning_rate,
    )
    model = fitted.trainer.whole_model()
    if fitted.trainer.is_world_process_zero():
        fold_into_head(model, shift=fitted.shift)  # saved model's probabilities = the scores reported
        save_pretrained_atomic(model, folder)
        tmp = folder / "scores.tmp.npz"
        np.savez(tmp, **fitted.scores)
        tmp.replace(done)
    fitted.trainer.accelerator.wait_for_everyone()
    return fitted


def start_from(model, training_args, name: str) -> None:
    """Load the backbone weights of the single-modality model `<output_dir>/ablation/<name>` into `model`."""
    from hf_medai.models.fusion import FusionModel

    single = FusionModel.from_pretrained(Path(training_args.output_dir) / ABLATION_DIR / name)
    model.backbone.load_state_dict(single.backbone.state_dict())


@dataclass
class Stages:
    """What `train_stages` trained: the fused model, {single-modality name: Fitted}, the fused model's missing-modality
    scores ({"tabular" | "primary": test probabilities}) and the stage its backbone started from."""

    fused: Fitted
    ablation: dict[str, Fitted]
    missing_scores: dict[str, np.ndarray]
    started_from: str | None


def train_stages(
    backbone,
    modality: str,
    single: str,
    schema: TabularSchema,
    splits,
    collators,
    training_args,
    class_names,
    columns,
    model_args: FusionArguments,
    resume=None,
    resuming: bool = False,
    callbacks=(),
):
    """Both stages of a fusion run: the single-modality model `single` (e.g. "image_only") when baselines are on,
    then the fused model (from that model's backbone when asked), then the fused model's missing-modality scores.
    Returns the `Stages`."""
    from hf_medai.models.fusion import FusionModel

    settings = dict(fusion_dim=model_args.fusion_dim, modality_dropout=model_args.modality_dropout)
    train = dict(
        class_balance=model_args.class_balance, callbacks=callbacks, head_learning_rate=model_args.head_learning_rate
    )
    ablation, started_from = {}, None
    if model_args.baselines:
        ablation[single] = baseline_scores(
            single,
            lambda: FusionModel.from_backbone(backbone, None, class_names, modality, **settings),
            splits,
            collators,
            training_args,
            class_names,
            columns,
            resume=resuming,
            **train,
        )
    model = FusionModel.from_backbone(backbone, schema, class_names, modality, fusion=model_args.fusion, **settings)
    if model_args.baselines and model_args.start_from_single_modality:
        start_from(model, training_args, single)
        started_from = f"{ABLATION_DIR}/{single}"
    fused = fit_and_score(model, splits, collators, training_args, class_names, columns, resume=resume, **train)
    return Stages(fused, ablation, missing_modality_scores(fused.trainer, splits["test"], schema), started_from)


def missing_modality_scores(trainer: MedTrainer, test, schema: TabularSchema) -> dict[str, np.ndarray]:
    """The fused model's test scores with the tabular features all missing ("tabular") and with the primary input
    absent ("primary")."""
    empty = schema.encode([{}] * len(test))
    no_tabular = test.remove_columns(list(KEYS))
    for key in KEYS:
        no_tabular = no_tabular.add_column(key, empty[key].tolist())
    no_primary = test.add_column("primary_absent", [True] * len(test))
    return {"tabular": predict(trainer, no_tabular), "primary": predict(trainer, no_primary)}
