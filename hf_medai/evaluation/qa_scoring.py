"""Running a causal LM over multiple-choice questions: each option's log-likelihood after the chat prompt, and
greedy replies, in left-padded batches (the batching and its single-token shortcut are described in
`hf_medai.evaluation.qa`, which turns these into predictions and reports).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hf_medai.data.medqa import build_prompt_messages, chat_token_ids, option_continuations


def _device(model):
    return next(model.parameters()).device


def _left_padded(sequences: Sequence[Sequence[int]], pad_id: int, device):
    """(input_ids, attention_mask, position_ids), left-padded; positions count real tokens only, so a padded
    prompt gets the same logits as the prompt alone (transformers does not derive positions from the mask)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def _batches(order: Sequence[int], batch_size: int):
    for start in range(0, len(order), max(1, batch_size)):
        yield list(order[start : start + max(1, batch_size)])


def continuation_token_ids(example: Mapping, tokenizer, style: str = "letter") -> tuple[list[int], list[list[int]]]:
    """(prompt ids, one id list per option) exactly as the chat template renders the assistant's reply.

    Each option's reply is rendered as the assistant turn (as in training); its ids are what follows the prompt,
    minus the template's end-of-turn tokens (the common tail of the renderings of two different replies).
    """
    messages = build_prompt_messages(example)
    prompt = chat_token_ids(tokenizer, messages, add_generation_prompt=True)

    def tail(content: str) -> list[int]:
        full = chat_token_ids(
            tokenizer, [*messages, {"role": "assistant", "content": content}], add_generation_prompt=False
        )
        if full[: len(prompt)] != prompt:
            raise ValueError(
                "this tokenizer's chat template does not render the prompt as a prefix of prompt + "
                "answer, so options cannot be scored after the prompt"
            )
        return full[len(prompt) :]

    a, b = tail("A"), tail("B")
    end = 0
    while end < min(len(a), len(b)) - 1 and a[len(a) - 1 - end] == b[len(b) - 1 - end]:
        end += 1
    options = []
    for text in option_continuations(example, style):
        ids = tail(text)
        ids = ids[: len(ids) - end] if end else ids
        if not ids:
            raise ValueError(f"option {text!r} renders to no tokens")
        options.append(ids)
    return prompt, options


def option_logliks(
    model, tokenizer, examples: Sequence[Mapping], style: str = "letter", batch_size: int = 8
) -> np.ndarray:
    """(n, K) summed log-probabilities of each option's continuation after the chat prompt (NaN past a
    question's own options); K = the most options of any question. The model is put in eval mode."""
    import torch

    model.eval()
    device = _device(model)
    rendered = [continuation_token_ids(ex, tokenizer, style) for ex in examples]
    k_max = max(len(opts) for _, opts in rendered)
    scores = np.full((len(examples), k_max), np.nan)
    single = [i for i, (_, opts) in enumerate(rendered) if all(len(o) == 1 for o in opts)]
    multi = [i for i, (_, opts) in enumerate(rendered) if any(len(o) != 1 for o in opts)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        # One forward per prompt: the last position's next-token log-probabilities score every option.
        by_length = sorted(single, key=lambda i: len(rendered[i][0]))
        for batch in _batches(by_length, batch_size):
            ids, mask, positions = _left_padded([rendered[i][0] for i in batch], pad, device)
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1
            ).logits
            logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu().numpy()
            for row, i in enumerate(batch):
                for k, option in enumerate(rendered[i][1]):
                    scores[i, k] = logprobs[row, option[0]]
        # Multi-token continuations: one sequence per option, summing the continuation's token log-probabilities.
        pairs = [(i, k) for i in multi for k in range(len(rendered[i][1]))]
        pairs.sort(key=lambda p: len(rendered[p[0]][0]) + len(rendered[p[0]][1][p[1]]))
        for batch in _batches(list(range(len(pairs))), batch_size):
            seqs = [rendered[pairs[j][0]][0] + rendered[pairs[j][0]][1][pairs[j][1]] for j in batch]
            ids, mask, positions = _left_padded(seqs, pad, device)
            logprobs = torch.log_softmax(
                model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits.float(),
                dim=-1,
            )
            for row, j in enumerate(batch):
                i, k = pairs[j]
                cont = rendered[i][1][k]
                width = ids.shape[1]
                # token t of the continuation sits at column width - len(cont) + t, predicted one column earlier
                cols = torch.arange(width - len(cont) - 1, width - 1, device=ids.device)
                token = torch.tensor(cont, device=ids.device)
                scores[i, k] = float(logprobs[row, cols, token].sum())
    return scores


def generate_replies(
    model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """Greedy replies (decoded, special tokens dropped) to tokenized prompts, batched with left padding."""
    import torch

    model.eval()
    device = _device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    replies = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    with torch.inference_mode():
        for batch in _batches(order, batch_size):
            ids, mask, _ = _left_padded([prompts[i] for i in batch], pad, device)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
            )
            for row, i in enumerate(batch):
                replies[i] = tokenizer.decode(out[row, ids.shape[1] :], skip_special_tokens=True).strip()
    return replies


def letter_prompts(examples: Sequence[Mapping], tokenizer) -> list[list[int]]:
    """The chat prompts asking for the letter, tokenized (the same prompt log-likelihood scoring uses)."""
    return [chat_token_ids(tokenizer, build_prompt_messages(ex), add_generation_prompt=True) for ex in examples]
