"""Clinical outcome demo: a note -> calibrated risk, and the words that drove it by integrated gradients.

The recipe folds temperature scaling into the classifier head, so the softmax of the saved model's logits is
the calibrated probability. Long notes are scored exactly as the recipe scored its test set (its windows and
pooling, `hf_medai.models.text.predict_notes`); attributions cover the first window, which the app says.
Integrated gradients (Sundararajan et al., 2017): token embeddings scaled from a [PAD] baseline, gradients of
the risk's log-odds averaged along that path, times (input - baseline); word score = sum over its tokens.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hf_medai.demos.common import MAX_NOTE_CHARS, header, read_metrics

IG_STEPS = 24


class ClinicalDemo:
    def __init__(self, run_dir: str | Path):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.run_dir = Path(run_dir)
        self.metrics = read_metrics(run_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(run_dir, use_safetensors=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(run_dir)
        config = self.model.config
        self.regression = config.num_labels == 1
        self.class_names = [config.id2label[i] for i in range(config.num_labels)]
        self.outcome = self.metrics.get("outcome") or self.run_dir.name
        # the class whose probability is "the risk": the second of two, else the predicted one
        self.positive = 1 if len(self.class_names) == 2 else None

    def predict(self, note: str):
        """note -> (risk markdown, {class: probability} or None, [(word, score in [-1, 1])] for HighlightedText)."""
        import gradio as gr

        from hf_medai.models.text import predict_notes, softmax

        note = (note or "").strip()
        if not note:
            raise gr.Error("Paste a clinical note first.")
        if len(note) > MAX_NOTE_CHARS:
            raise gr.Error(
                f"The note has {len(note):,} characters; the limit is {MAX_NOTE_CHARS:,}. Paste a shorter excerpt."
            )
        logits = predict_notes(self.model, self.tokenizer, [note])
        if self.regression:
            value = float(logits[0][0] if np.ndim(logits[0]) else logits[0])
            return f"### Predicted {self.outcome}: **{value:.2f}**", None, self.attribute(note, target=None)
        probs = softmax(logits)[0]
        target = self.positive if self.positive is not None else int(np.argmax(probs))
        text = (
            f"### Calibrated risk of {self.class_names[target]}: **{probs[target]:.1%}**"
            if self.positive is not None
            else f"### Most likely: **{self.class_names[target]}** ({probs[target]:.1%}, calibrated)"
        )
        scores = {name: float(p) for name, p in zip(self.class_names, probs)}
        return text, scores, self.attribute(note, target)

    def attribute(self, note: str, target: int | None) -> list[tuple[str, float | None]]:
        """Integrated gradients of the target's log-odds (or the regression output), summed per word."""
        offsets, scores, special, _ = self.token_attributions(note, target)
        return words_with_scores(note, offsets, scores, special)

    def token_attributions(self, note: str, target: int | None):
        """(token offsets, IG score per token, special-token mask, f(input) - f(baseline)) for the first window.

        Completeness: the scores sum to about f(input) - f(baseline), which tests check."""
        torch = self.torch
        enc = self.tokenizer(note, truncation=True, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        ids, mask = enc["input_ids"], enc["attention_mask"]
        embed = self.model.get_input_embeddings()
        special = torch.tensor(
            self.tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True), dtype=torch.bool
        )
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        baseline_ids = torch.where(special, ids[0], torch.full_like(ids[0], pad_id))
        with torch.no_grad():
            x, x0 = embed(ids)[0], embed(baseline_ids[None])[0]
        # midpoint rule along the straight path, plus the two end points for the completeness delta
        alphas = torch.cat([(torch.arange(IG_STEPS, dtype=x.dtype) + 0.5) / IG_STEPS, torch.tensor([0.0, 1.0])])
        path = (x0 + alphas[:, None, None] * (x - x0)).requires_grad_(True)
        n = len(alphas)
        extra = {"token_type_ids": enc["token_type_ids"].expand(n, -1)} if "token_type_ids" in enc else {}
        logits = self.model(inputs_embeds=path, attention_mask=mask.expand(n, -1), **extra).logits.float()
        if target is None:
            out = logits[:, 0]
        else:
            logp = torch.log_softmax(logits, -1)
            rest = torch.cat([logp[:, :target], logp[:, target + 1 :]], -1)
            out = logp[:, target] - torch.logsumexp(rest, -1)  # log-odds of the target class
        (grads,) = torch.autograd.grad(out[:IG_STEPS].sum(), path)
        token_scores = ((x - x0) * grads[:IG_STEPS].mean(0)).sum(-1).detach().numpy()
        delta = float((out[-1] - out[-2]).detach())
        return offsets, token_scores, special.numpy(), delta

    def build(self):
        import gradio as gr

        with gr.Blocks(title="hf-medai: clinical outcome model") as app:
            header("Clinical outcome model", f"Outcome: `{self.outcome}` · classes: {', '.join(self.class_names)}")
            with gr.Row():
                with gr.Column():
                    note = gr.Textbox(
                        label=f"Clinical note (up to {MAX_NOTE_CHARS:,} characters)",
                        lines=12,
                        elem_id="note",
                        max_length=MAX_NOTE_CHARS,
                    )
                    button = gr.Button("Estimate risk", variant="primary", elem_id="estimate")
                with gr.Column():
                    risk = gr.Markdown(elem_id="risk")
                    probs = gr.Label(label="Calibrated probabilities", visible=not self.regression)
                    words = gr.HighlightedText(
                        label="Words that drove it (integrated gradients over the first "
                        f"{self.tokenizer.model_max_length} tokens; red raises, blue lowers)",
                        combine_adjacent=False,
                        show_legend=False,
                        elem_id="attributions",
                    )
            button.click(self.predict, inputs=note, outputs=[risk, probs, words])
        return app


def words_with_scores(text: str, offsets, token_scores, special) -> list[tuple[str, float | None]]:
    """Whitespace-separated words of the attributed part of `text`, each with the sum of its tokens' scores
    scaled to [-1, 1]; the unattributed rest (past the window) as one unscored span."""
    spans = [(s, e, float(v)) for (s, e), v, sp in zip(offsets, token_scores, special) if not sp and e > s]
    if not spans:
        return [(text, None)]
    end = spans[-1][1]
    words, prev = [], 0
    for m in re.finditer(r"\S+", text[:end]):
        # each piece carries the whitespace before it, so the pieces join back into the text exactly
        score = sum(v for s, e, v in spans if s < m.end() and e > m.start())
        words.append((text[prev : m.end()], score))
        prev = m.end()
    top = max(abs(s) for _, s in words) or 1.0
    out = [(w, round(s / top, 4)) for w, s in words]
    if prev < len(text):
        out.append((text[prev:], None))
    return out
