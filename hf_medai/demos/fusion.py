"""Fusion demo: an image plus metadata fields (lesion_fusion) or a note plus structured EHR fields (note_fusion) ->
the probability and the run's threshold decision, and each modality's contribution as drop-one-modality deltas.

The inputs come from the saved processor's `TabularSchema`: a dropdown per categorical feature (its training
vocabulary plus "unknown"), a number per numeric feature; a blank field or "unknown" is "not recorded", which the
model reads as that feature's learned missing token (never imputed). The image or note may be left out too: the
model then reads its learned "absent" vector, as in the card's missing-modality rows.

A modality's contribution is p(everything given) - p(that modality withheld): the tabular features all read as
not recorded, or the primary input replaced by the "absent" vector. `score_fusion` computes it without Gradio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_medai.demos.common import MAX_IMAGE_PIXELS, MAX_NOTE_CHARS, card_section, header, read_metrics

UNKNOWN = "unknown"


@dataclass
class FusionScore:
    """Class probabilities of one input: everything given, the tabular features withheld, the primary withheld."""

    probs: np.ndarray  # (K,)
    without_tabular: np.ndarray  # (K,)
    without_primary: np.ndarray  # (K,)
    target: int  # the class whose probability the contributions are about
    primary_given: bool
    fields_given: int  # tabular features recorded (not blank, not "unknown")

    @property
    def tabular_delta(self) -> float:
        return float(self.probs[self.target] - self.without_tabular[self.target])

    @property
    def primary_delta(self) -> float:
        return float(self.probs[self.target] - self.without_primary[self.target])


def recorded(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that hold a value (a blank, None, NaN or "unknown"-like entry is not recorded)."""
    from hf_medai.data.tabular import is_missing

    return {k: v for k, v in fields.items() if not is_missing(v)}


def score_fusion(model, processor, primary, fields: dict[str, Any], target: int | None = None) -> FusionScore:
    """Score one input three ways in one batch: as given, with every tabular feature not recorded, and with the
    primary input (image or note) absent. `primary=None` scores the input without it (all three rows then read the
    "absent" vector); `target`: the class of interest (default: the second of two classes, else the most probable)."""
    import torch

    fields = recorded(fields)
    given = primary is not None and not (isinstance(primary, str) and not primary.strip())
    rows = [fields, {}, fields]
    if processor.modality == "image":
        from PIL import Image

        image = primary.convert("RGB") if given else Image.new("RGB", (32, 32))
        inputs = processor(images=[image] * 3, tabular=rows)
    else:
        inputs = processor(text=[primary if given else ""] * 3, tabular=rows)
    inputs["primary_absent"] = torch.tensor([not given, not given, True])
    with torch.no_grad():
        probs = torch.softmax(model(**inputs).logits.float(), -1).numpy()
    if target is None:
        target = 1 if probs.shape[1] == 2 else int(np.argmax(probs[0]))
    return FusionScore(probs[0], probs[1], probs[2], target, given, len(fields))


def _display(name: str) -> str:
    text = str(name).replace("_", " ")
    return text[:1].upper() + text[1:]


class FusionDemo:
    """The app of a fusion run folder; the kinds' subclasses name the modalities and lay out the fields."""

    title = "Fusion model"
    primary_name = "primary input"
    tabular_name = "tabular features"
    fields_in_accordion = False  # many fields (structured EHR): fold them away
    fields_help = ""  # a line above the fields (e.g. the prediction time)

    def __init__(self, run_dir: str | Path):
        from hf_medai.models.fusion import FusionModel, FusionProcessor

        self.run_dir = Path(run_dir)
        self.metrics = read_metrics(run_dir)
        self.model = FusionModel.from_pretrained(run_dir, use_safetensors=True).eval()
        self.processor = FusionProcessor.from_pretrained(run_dir)
        self.schema = self.processor.schema
        self.class_names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    # ------------------------------------------------------------------------------------------- scoring
    def fields(self, values) -> dict[str, Any]:
        """The form's values, in the schema's order, as a {feature: value} dict."""
        return dict(zip(self.schema.names, values))

    def score(self, primary, *values) -> FusionScore:
        import gradio as gr

        if self.processor.modality == "image" and primary is not None:
            from PIL import Image

            if not isinstance(primary, Image.Image):
                primary = Image.fromarray(np.asarray(primary))
            if primary.width * primary.height > MAX_IMAGE_PIXELS:
                raise gr.Error(
                    f"The image is {primary.width}x{primary.height} pixels; the limit is {MAX_IMAGE_PIXELS:,} "
                    "pixels. Please downscale it."
                )
        if isinstance(primary, str):
            if len(primary) > MAX_NOTE_CHARS:
                raise gr.Error(f"The note has {len(primary):,} characters; the limit is {MAX_NOTE_CHARS:,}.")
            primary = primary.strip() or None
        fields = self.fields(values)
        if primary is None and not recorded(fields):
            raise gr.Error(f"Give the {self.primary_name}, or at least one of the {self.tabular_name} fields.")
        return score_fusion(self.model, self.processor, primary, fields)

    def decision(self, s: FusionScore) -> str:
        """Markdown: the decision as a heading (the run's threshold for a binary model), then the probabilities."""
        threshold = self.metrics.get("threshold")
        p = s.probs
        if len(self.class_names) == 2 and threshold is not None:
            call = self.class_names[1] if p[1] >= threshold else self.class_names[0]
            sign = "≥" if p[1] >= threshold else "<"
            text = (
                f"## {_display(call)}\n{_display(self.class_names[1])} probability **{p[1]:.3f} {sign} threshold "
                f"{threshold:.3f}**, the run's operating threshold: the one at which the model card reports "
                "sensitivity and specificity."
            )
        else:
            call = self.class_names[int(np.argmax(p))]
            text = f"## {_display(call)}\nThe most probable class (no validated operating threshold in this run)."
        ranked = sorted(zip(self.class_names, p), key=lambda kv: -kv[1])
        text += "\n\nModel probabilities: " + " · ".join(f"{_display(c)} {v:.3f}" for c, v in ranked) + "."
        if not s.primary_given:
            text += f'\n\n_Scored without the {self.primary_name}: the model read its learned "absent" vector._'
        if not s.fields_given:
            text += f"\n\n_No {self.tabular_name} field recorded: every one read as its learned missing token._"
        return text

    def contributions(self, s: FusionScore) -> str:
        """Markdown: each modality's drop-one-modality delta on the target class's probability, and what it means."""
        target = _display(self.class_names[s.target])
        n = len(self.schema.names)
        rows = [
            (self.primary_name, "yes" if s.primary_given else "no", s.without_primary, s.primary_delta),
            (self.tabular_name, f"{s.fields_given} of {n} fields", s.without_tabular, s.tabular_delta),
        ]
        lines = ["| Modality | Given | Without it | Contribution |", "|:--|:--|--:|--:|"]
        for name, given, without, delta in rows:
            shown = "n/a (not given)" if given in ("no", f"0 of {n} fields") else f"{delta:+.3f}"
            lines.append(f"| {name} | {given} | {without[s.target]:.3f} | {shown} |")
        return (
            "\n".join(lines)
            + f"\n\nContribution = P({target}) with everything given ({s.probs[s.target]:.3f}) minus P({target}) with "
            f"that modality withheld (Without it: the {self.tabular_name} all read as not recorded; the {self.primary_name} "
            'replaced by the model\'s learned "absent" vector). Positive: that modality raised the probability. '
            "The two need not add up to the whole; they describe this model on this input, not causes."
        )

    def predict(self, primary, *values) -> tuple[str, str]:
        """The button: (decision markdown, contributions markdown)."""
        s = self.score(primary, *values)
        return self.decision(s), self.contributions(s)

    # ------------------------------------------------------------------------------------------- the app
    def primary_input(self):
        raise NotImplementedError

    def field_inputs(self) -> list:
        import gradio as gr

        inputs = []
        for name, vocab in self.schema.categorical.items():
            inputs.append(
                gr.Dropdown(
                    [UNKNOWN, *vocab], value=UNKNOWN, label=f"{name} (unknown = not recorded)", elem_id=_id(name)
                )
            )
        for name in self.schema.numeric:
            inputs.append(gr.Number(value=None, label=f"{name} (blank = not recorded)", elem_id=_id(name)))
        return inputs

    def build(self):
        import gradio as gr

        with gr.Blocks(title=f"hf-medai: {self.title.lower()}") as app:
            header(self.title, f"Model: `{self.run_dir.name}` ({', '.join(self.class_names)})")
            with gr.Row():
                with gr.Column():
                    primary = self.primary_input()
                    if self.fields_help:
                        gr.Markdown(self.fields_help, elem_id="fields-help")
                    if self.fields_in_accordion:
                        with gr.Accordion(f"{self.tabular_name} (blank = not recorded)", open=True):
                            fields = self.field_inputs()
                    else:
                        fields = self.field_inputs()
                    button = gr.Button("Score", variant="primary", elem_id="score")
                with gr.Column():
                    decision = gr.Markdown(elem_id="decision")
                    contributions = gr.Markdown(elem_id="contributions")
            with gr.Accordion("Intended use (from the model card)", open=False):
                gr.Markdown(card_section(self.run_dir, "Intended use") or "_The card has no intended-use section._")
            button.click(self.predict, inputs=[primary, *fields], outputs=[decision, contributions])
        return app


def _id(name: str) -> str:
    return "field-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


class LesionFusionDemo(FusionDemo):
    title = "Lesion classifier (image + metadata)"
    primary_name = "image"
    tabular_name = "metadata"

    def primary_input(self):
        import gradio as gr

        return gr.Image(
            type="pil", label="Dermoscopic image (optional)", image_mode="RGB", height=280, elem_id="image"
        )


class NoteFusionDemo(FusionDemo):
    title = "Clinical outcome model (note + structured EHR)"
    primary_name = "note"
    tabular_name = "EHR"
    fields_in_accordion = True

    @property
    def fields_help(self) -> str:
        report = self.metrics.get("data_report") or {}
        hours = report.get("window_hours") or self.metrics.get("window_hours") or 24
        return (
            f"Structured fields: only values charted between the admission and the prediction time (admission + "
            f"{hours} h); nothing measured later. Leave a field blank when it was not measured."
        )

    def primary_input(self):
        import gradio as gr

        return gr.Textbox(
            label=f"Clinical note (up to {MAX_NOTE_CHARS:,} characters; optional)",
            lines=10,
            max_length=MAX_NOTE_CHARS,
            elem_id="note",
        )
