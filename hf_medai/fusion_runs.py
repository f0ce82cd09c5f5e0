"""What both fusion recipes share (recipes/lesion_fusion.py: image + metadata; recipes/clinical_fusion.py: note +
structured EHR): train a model with the Trainer, score it, train the single-modality baselines in the same run on
the same split, and write the ablation into the fused model's report.

    fused = fit_and_score(model, splits, collators, training_args, class_names, resume=resume)
    single = baseline_scores("image_only", build, splits, collators, training_args, class_names, resume=bool(resume))
    missing = missing_modality_scores(fused.trainer, splits["test"], schema)

A baseline lives in `<output_dir>/ablation/<name>/` (its model, checkpoints and `scores.npz`): a resumed run
reuses a finished baseline's scores and resumes an unfinished one from its last complete checkpoint.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from hf_medai.data.tabular import KEYS, TabularCollator, TabularSchema
from hf_medai.image_classification import selection_metrics
from hf_medai.io import last_complete_checkpoint, save_pretrained_atomic
from hf_medai.models.heads import class_weighted_loss, fold_into_head, prior_correction
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
    class_balance: Literal["weighted_loss", "none"] = field(
        default="weighted_loss",
        metadata={"help": "weighted_loss (inverse frequency; its prior shift is undone in the saved head) | none."},
    )
    baselines: bool = field(
        default=True,
        metadata={"help": "Also train the single-modality model and the gradient-boosting baseline (ablation)."},
    )


@dataclass
class Fitted:
    trainer: MedTrainer | None
    train_result: Any
    scores: dict[str, np.ndarray]  # split -> (n, K) probabilities (prior shift of a class-weighted loss undone)
    throughput: ThroughputCallback | None = None
    shift: np.ndarray | None = None  # the logit shift folded into the saved head


def softmax(logits, shift=None) -> np.ndarray:
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    if shift is not None:
        logits = logits + torch.as_tensor(shift, dtype=torch.float32)
    return torch.softmax(logits, -1).numpy()


def fusion_trainer(
    model, splits, collators, training_args, class_names, columns, callbacks=(), class_balance="weighted_loss"
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
    trainer = MedTrainer(
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
    trainer.throughput, trainer.keep_columns = throughput, keep
    trainer.shift = prior_correction(counts) if weighted else np.zeros(len(class_names))
    return trainer


def _mean_tokens(ds) -> float | None:
    if "input_ids" not in ds.column_names:
        return None
    return float(np.mean([len(x) for x in ds["input_ids"]]))


def predict(trainer: MedTrainer, dataset) -> np.ndarray:
    columns = [c for c in trainer.keep_columns if c in dataset.column_names]
    columns += [c for c in ("primary_absent",) if c in dataset.column_names]
    return softmax(trainer.predict(dataset.select_columns(columns)).predictions, trainer.shift)


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
) -> Fitted:
    """Train (or resume) and score validation and test with the kept checkpoint."""
    trainer = fusion_trainer(model, splits, collators, training_args, class_names, columns, callbacks, class_balance)
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
        build(), splits, collators, args, class_names, columns, resume=checkpoint, class_balance=class_balance
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


def missing_modality_scores(trainer: MedTrainer, test, schema: TabularSchema) -> dict[str, np.ndarray]:
    """The fused model's test scores with the tabular features all missing ("tabular") and with the primary input
    absent ("primary")."""
    empty = schema.encode([{}] * len(test))
    no_tabular = test.remove_columns(list(KEYS))
    for key in KEYS:
        no_tabular = no_tabular.add_column(key, empty[key].tolist())
    no_primary = test.add_column("primary_absent", [True] * len(test))
    return {"tabular": predict(trainer, no_tabular), "primary": predict(trainer, no_primary)}
