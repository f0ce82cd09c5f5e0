"""Notes longer than an encoder's window: token windows (head, head+tail, overlapping chunks), a dataset of them,
their logits in length-sorted dynamically padded batches, and the pooling of chunk logits back into one per note.

`hf_medai.models.text.predict_notes` puts these together for a saved model, reading the settings the recipe stored
in its config.json under `WINDOW_CONFIG_KEY`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

# How a saved model wants long notes handled: stored in config.json under this key.
WINDOW_CONFIG_KEY = "hf_medai_note_windows"
WINDOW_STRATEGIES = ("head", "head_tail", "chunks")
POOLINGS = ("mean", "max")


def note_windows(
    input_ids: Sequence[int],
    max_length: int,
    strategy: str = "head",
    stride: int = 0,
    head_tokens: int | None = None,
    max_chunks: int | None = None,
) -> list[list[int]]:
    """Token windows of one note, each at most `max_length` ids (special tokens not included).

    head: the first `max_length` ids. head_tail: the first `head_tokens` (default a quarter, after Sun et al.
    2019's 128 + 382 of 510) and the last ids, joined. chunks: consecutive windows overlapping by `stride` ids,
    the first `max_chunks` of them if given. A note that fits gives one window; an empty note one empty window,
    so every example keeps a prediction.
    """
    if strategy not in WINDOW_STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: choose one of {WINDOW_STRATEGIES}")
    if max_length < 1 or not 0 <= stride < max_length:
        raise ValueError(f"need max_length >= 1 and 0 <= stride < max_length (got {max_length}, {stride})")
    ids = list(input_ids)
    if len(ids) <= max_length:
        return [ids]
    if strategy == "head":
        return [ids[:max_length]]
    if strategy == "head_tail":
        head = max_length // 4 if head_tokens is None else head_tokens
        if not 0 <= head <= max_length:
            raise ValueError(f"head_tokens={head_tokens} must lie in [0, max_length={max_length}]")
        tail = max_length - head
        return [ids[:head] + (ids[-tail:] if tail else [])]
    step = max_length - stride
    starts = range(0, len(ids) - stride, step)
    windows = [ids[s : s + max_length] for s in starts]
    return windows[:max_chunks] if max_chunks else windows


def encode_note_windows(
    batch: Mapping[str, list],
    indices: Sequence[int],
    tokenizer: Any,
    max_length: int | None = None,
    strategy: str = "head",
    stride: int = 0,
    head_tokens: int | None = None,
    max_chunks: int | None = None,
    text_column: str = "text",
) -> dict[str, list]:
    """One row per token window of each note in a batch; use it as

        dataset.map(encode_note_windows, batched=True, with_indices=True, remove_columns=dataset.column_names,
                    fn_kwargs={"tokenizer": tokenizer, "strategy": "chunks", "stride": 64})

    Each row has input_ids and attention_mask (special tokens added, at most `max_length`, default the
    tokenizer's), `example_index` (the note's row in the dataset, for `pool_chunk_logits`) and every other
    column of the batch repeated, so labels and subgroups follow their windows.
    """
    max_length = max_length or tokenizer.model_max_length
    prefix, suffix = special_token_affixes(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    encoded = tokenizer(list(batch[text_column]), add_special_tokens=False, truncation=False, verbose=False)
    others = [k for k in batch if k != text_column]
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "example_index": [], **{k: [] for k in others}}
    for i, ids in enumerate(encoded["input_ids"]):
        for window in note_windows(ids, budget, strategy, stride, head_tokens, max_chunks):
            full = prefix + window + suffix
            out["input_ids"].append(full)
            out["attention_mask"].append([1] * len(full))
            out["example_index"].append(int(indices[i]))
            for k in others:
                out[k].append(batch[k][i])
    return out


def special_token_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after one sequence ([CLS] / [SEP] for BERT, <s> / </s>, BOS only).

    Read off the tokenizer's own output, since transformers 5 tokenizers no longer expose
    `build_inputs_with_special_tokens`: tokenise one word with and without special tokens and see what was added.
    """
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError(f"cannot tell which special tokens {type(tokenizer).__name__} adds")


def pool_chunk_logits(
    logits: Any, chunk_to_example: Sequence[int], how: str = "mean", num_examples: int | None = None
) -> np.ndarray:
    """Per-example logits from per-window logits: mean or max over each example's windows.

    `chunk_to_example[i]` is the example index (0..num_examples-1) of window i; row e of the result belongs to
    example e. Works for (windows, classes) and (windows,) regression outputs.
    """
    if how not in POOLINGS:
        raise ValueError(f"how={how!r}: choose one of {POOLINGS}")
    values = np.asarray(logits, dtype=np.float64)
    owner = np.asarray(chunk_to_example, dtype=np.int64)
    if len(owner) != len(values):
        raise ValueError(f"{len(values)} logits but {len(owner)} chunk_to_example entries")
    n = int(num_examples if num_examples is not None else (owner.max() + 1 if len(owner) else 0))
    counts = np.bincount(owner, minlength=n)
    if len(counts) > n or (counts == 0).any():
        raise ValueError("every example needs at least one window and no index may reach num_examples")
    if how == "mean":
        pooled = np.zeros((n, *values.shape[1:]))
        np.add.at(pooled, owner, values)
        return pooled / counts.reshape(-1, *([1] * (values.ndim - 1)))
    pooled = np.full((n, *values.shape[1:]), -np.inf)
    np.maximum.at(pooled, owner, values)
    return pooled


def window_dataset(
    dataset,
    tokenizer,
    strategy: str = "head",
    stride: int = 0,
    head_tokens: int | None = None,
    max_chunks: int | None = None,
    label_column: str | None = "label",
    text_column: str = "text",
):
    """One row per token window of each note: input_ids, attention_mask, example_index, length (and labels).

    Windows are at most `tokenizer.model_max_length` tokens with special tokens; see
    `note_windows` for the strategies. A training set of chunks gives every
    chunk its note's label (Huang et al. 2019); predictions pool them back per note.
    """
    keep = [text_column] + ([label_column] if label_column else [])
    windows = dataset.select_columns(keep).map(
        encode_note_windows,
        batched=True,
        with_indices=True,
        remove_columns=keep if not label_column else [text_column],
        fn_kwargs=dict(
            tokenizer=tokenizer,
            strategy=strategy,
            stride=stride,
            head_tokens=head_tokens,
            max_chunks=max_chunks,
            text_column=text_column,
        ),
        desc=f"note windows ({strategy})",
    )
    if label_column:
        windows = windows.rename_column(label_column, "labels")
    return windows.map(lambda b: {"length": [len(x) for x in b["input_ids"]]}, batched=True)


def sorted_by_length(windows):
    """Longest first: evaluated in this order (sequentially), batches of similar length pad little."""
    return windows.select(length_order(windows["length"]))


def length_order(lengths: Sequence[int]) -> np.ndarray:
    """Row order longest-first: batches of similar length pad least, and the largest batch comes first."""
    return np.argsort(-np.asarray(lengths), kind="stable")


@torch.no_grad()
def window_logits(model, tokenizer, input_ids: Sequence[Sequence[int]], batch_size: int = 32) -> np.ndarray:
    """Logits of each window, in input order, computed in length-sorted batches padded to their own longest."""
    model.eval()
    device = next(model.parameters()).device
    order = length_order([len(x) for x in input_ids])
    out: list[np.ndarray] = [None] * len(order)  # type: ignore[list-item]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [list(input_ids[i]) for i in rows]}, return_tensors="pt")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
        for i, row in enumerate(rows):
            out[row] = logits[i]
    return np.stack(out) if out else np.zeros((0, model.config.num_labels))


def window_settings(model) -> dict[str, Any]:
    """How this model's notes are windowed (recorded in its config.json by the recipe), or the head default."""
    return {
        "strategy": "head",
        "pooling": "mean",
        "stride": 0,
        "head_tokens": None,
        "max_chunks": None,
        **(getattr(model.config, WINDOW_CONFIG_KEY, None) or {}),
    }
