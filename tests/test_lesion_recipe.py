"""End to end: the lesion recipe on a small synthetic HAM10000 sample, then the run folder's promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, confusion_matrix, roc_auc_score

from helpers import load_recipe

recipe = load_recipe("lesion_classification")

TINY = [
    "--image_size",
    "32",
    "--from_scratch",
    "true",
    "--per_device_train_batch_size",
    "16",
    "--per_device_eval_batch_size",
    "64",
    "--n_bootstrap",
    "50",
    "--min_group_size",
    "5",
    "--save_strategy",
    "steps",
    "--eval_strategy",
    "steps",
    "--logging_steps",
    "1",
    "--learning_rate",
    "0.002",
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from hf_medai.data.synthetic.lesions import write_ham10000

    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", n=240, seed=3)


@pytest.fixture(scope="module")
def run(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lesions"
    recipe.main(
        [
            "--data_dir",
            str(sample),
            "--output_dir",
            str(out),
            "--max_steps",
            "8",
            "--save_steps",
            "4",
            "--eval_steps",
            "4",
            *TINY,
        ]
    )
    return out


def test_run_folder_follows_the_contract(run):
    for name in [
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "metrics.json",
        "predictions.csv",
        "run_config.yaml",
        "reliability_diagram.png",
        "roc_pr_curves.png",
    ]:
        assert (run / name).is_file(), name
    assert not list(run.glob("*.bin")), "weights must be safetensors only"
    m = json.loads((run / "metrics.json").read_text())
    for key in [
        "auroc",
        "auroc_ci_low",
        "auroc_ci_high",
        "auprc",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "ece",
        "specificity_at_sensitivity_0.741",
    ]:
        assert key in m, key
    assert m["auroc_ci_low"] <= m["auroc"] <= m["auroc_ci_high"]
    assert {"fitzpatrick", "sex", "age_band"} <= set(m["subgroups"])
    assert m["throughput"]["train_samples_per_second"] > 0 and m["throughput"]["peak_rss_mb"] > 0
    assert m["throughput"]["world_size"] == 1
    assert m["data_report"]["rows_read"] == 240 and m["data_report"]["rows_skipped"] == 0
    assert m["training"]["global_step"] == 8
    pred = pd.read_csv(run / "predictions.csv")
    assert list(pred.columns[:3]) == ["id", "label", "pred"]
    assert {"score_not_melanoma", "score_melanoma", "sex", "age_band", "fitzpatrick"} <= set(pred.columns)
    assert len(pred) == m["n"]


def test_metrics_equal_sklearn_on_predictions_csv(run):
    m = json.loads((run / "metrics.json").read_text())
    pred = pd.read_csv(run / "predictions.csv")
    y = (pred["label"] == "melanoma").to_numpy().astype(int)
    s = pred["score_melanoma"].to_numpy()
    yhat = (s >= m["threshold"]).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, yhat, labels=[0, 1]).ravel()
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert m["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, yhat), abs=1e-9)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn), abs=1e-9)
    assert m["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-9)
    assert (pred["pred_at_threshold"] == np.where(yhat == 1, "melanoma", "not_melanoma")).all()
    # Per-group numbers too: the Fitzpatrick table equals sklearn on that group's rows.
    for group, g in m["subgroups"]["fitzpatrick"]["groups"].items():
        rows = pred["fitzpatrick"].astype(str) == str(group)
        assert g["n"] == int(rows.sum())


def test_kept_checkpoint_was_chosen_on_clean_validation_images(run):
    """load_best_model_at_end picks a checkpoint on the per-step validation AUROC: that score must be the kept
    model's AUROC on the clean validation images (the augmenting collator is for training batches only)."""
    from safetensors.torch import load_file

    m = json.loads((run / "metrics.json").read_text())
    best = m["training"]["best_checkpoint"]
    assert best and (run / "checkpoint-4").is_dir() and (run / "checkpoint-8").is_dir()
    # Re-scored on the validation split after training, the kept model gives exactly the recorded best metric.
    assert m["training"]["best_val_auroc"] == pytest.approx(m["validation"]["auroc"], abs=1e-6)
    # And the saved model is that checkpoint (the head also carries the prior correction folded in after training).
    kept, saved = load_file(f"{best}/model.safetensors"), load_file(run / "model.safetensors")
    body = [k for k in kept if not k.startswith("classifier.")]
    assert body and all((kept[k] == saved[k]).all() for k in body)


def test_card_parses_and_shows_the_same_numbers(run):
    from huggingface_hub import ModelCard

    m = json.loads((run / "metrics.json").read_text())
    card = ModelCard.load(run / "README.md")
    assert card.data.to_dict()["model-index"][0]["results"]
    text = card.text
    assert f"| AUROC | {m['auroc']:.3f} ({m['auroc_ci_low']:.3f}–{m['auroc_ci_high']:.3f}) |" in text
    for section in [
        "## Intended use",
        "## Out-of-scope use",
        "## Training data",
        "## Subgroup performance",
        "## Calibration",
        "## Bias, risks and limitations",
        "## Safety and regulatory notes",
        "## How to use",
        "## Training details",
    ]:
        assert section in text, section
    for column in ["fitzpatrick", "sex", "age_band"]:
        assert re.search(column, text, re.I), column
    assert "trained and tested on synthetic images" in text  # the sample writer marks its folder


def test_card_title_and_the_kept_checkpoint_come_from_the_run(run):
    """Issue 13 item 7: a title that says what the model is (not "lesion_classification: <folder>"), and which
    checkpoint was kept, at which step and epoch, on which validation metric."""
    m = json.loads((run / "metrics.json").read_text())
    text = (run / "README.md").read_text()
    title = re.search(r"^# (.+)$", text, re.MULTILINE).group(1)
    assert title == "Melanoma vs rest skin-lesion classifier (ViT)"
    kept = m["training"]["kept_checkpoint"]
    assert kept["checkpoint"] == Path(m["training"]["best_checkpoint"]).name == f"checkpoint-{kept['step']}"
    # step, epoch and metric as the trainer logged them at that evaluation
    history = json.loads((run / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
    logged = next(e for e in history if e.get("step") == kept["step"] and "eval_auroc" in e)
    assert kept["epoch"] == pytest.approx(logged["epoch"], abs=0.01) and kept["metric"] == "auroc"
    assert kept["value"] == pytest.approx(logged["eval_auroc"]) == pytest.approx(m["training"]["best_val_auroc"])
    assert (kept["n_evaluations"], kept["final_step"]) == (2, 8)
    line = next(l for l in text.splitlines() if l.startswith("- **Weights kept:**"))
    assert f"`{kept['checkpoint']}` (step {kept['step']} of 8, epoch {kept['epoch']:g})" in line
    assert f"validation AUROC ({kept['value']:.3f}) of 2 evaluations" in line
    chai = (run / "model_card.chai.xml").read_text()
    assert f"<ModelName>{title}</ModelName>" in chai


def test_pipeline_reload_predicts_the_same(run, sample):
    from transformers import pipeline

    from hf_medai.data.lesions import load_lesions

    pred = pd.read_csv(run / "predictions.csv").head(12)
    ds, _, _ = load_lesions(sample, "ham10000", "binary")
    paths = dict(zip(ds["id"], ds["image_path"]))
    clf = pipeline("image-classification", model=str(run))
    for _, row in pred.iterrows():
        out = clf(paths[row["id"]], top_k=2)
        top = max(out, key=lambda d: d["score"])
        assert top["label"] == row["pred"]
        score = {d["label"]: d["score"] for d in out}["melanoma"]
        assert score == pytest.approx(row["score_melanoma"], abs=2e-3)


def test_existing_run_folder_is_not_overwritten(run, sample):
    from hf_medai.run_folder import RunFolderExists

    with pytest.raises(RunFolderExists, match="already holds a run"):
        recipe.main(["--data_dir", str(sample), "--output_dir", str(run), "--max_steps", "1", *TINY])


def test_interrupted_run_resumes_to_the_same_total_steps(sample, tmp_path):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                raise RuntimeError("simulated crash")

    out = tmp_path / "run"
    flags = [
        "--data_dir",
        str(sample),
        "--output_dir",
        str(out),
        "--max_steps",
        "8",
        "--save_steps",
        "4",
        "--eval_steps",
        "4",
        *TINY,
    ]
    with pytest.raises(RuntimeError, match="simulated crash"):
        recipe.main(flags, callbacks=[Crash()])
    assert (out / "checkpoint-4").is_dir() and not (out / "metrics.json").exists()
    recipe.main([*flags, "--resume_from_checkpoint", "last"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["global_step"] == 8
    assert m["training"]["resumed_from"].endswith("checkpoint-4")
    assert m["throughput"]["optimizer_steps"] == 4  # only the steps this process ran


def test_training_changes_every_parameter_and_loss_falls(sample, tmp_path):
    from transformers import AutoModelForImageClassification

    from hf_medai.models.vision import build_image_classifier

    # Start from a saved local folder: the path real users take with a hub id or their own checkpoint.
    start = tmp_path / "start"
    before, processor = build_image_classifier(None, ["not_melanoma", "melanoma"], 32)
    before.save_pretrained(start)
    processor.save_pretrained(start)
    out = tmp_path / "run"
    recipe.main(
        [
            "--data_dir",
            str(sample),
            "--output_dir",
            str(out),
            "--model_name_or_path",
            str(start),
            "--max_steps",
            "16",
            "--save_steps",
            "100",
            "--augment",
            "false",
            "--class_balance",
            "none",
            "--load_best_model_at_end",
            "false",
            *TINY,
            "--eval_steps",
            "16",
            "--eval_on_start",
            "true",
        ]
    )
    after = AutoModelForImageClassification.from_pretrained(out)
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    unchanged = [n for n in b if np.allclose(b[n].detach().numpy(), a[n].detach().numpy())]
    assert not unchanged, unchanged
    training = json.loads((out / "metrics.json").read_text())["training"]
    assert len(training["loss_curve"]) == 16
    (step0, loss0), (step16, loss16) = training["eval_loss_curve"]
    assert (step0, step16) == (0, 16)
    assert loss16 < loss0  # validation loss, same images before and after training


def test_multiclass_task_seven_diagnoses(sample, tmp_path, capsys):
    from sklearn.metrics import accuracy_score

    out = tmp_path / "seven"
    recipe.main(
        [
            "--data_dir",
            str(sample),
            "--output_dir",
            str(out),
            "--task",
            "multiclass",
            "--max_steps",
            "4",
            "--save_steps",
            "4",
            "--eval_steps",
            "4",
            *TINY,
        ]
    )
    m = json.loads((out / "metrics.json").read_text())
    # The run ends with its summary block: folder, headline with CI, kept checkpoint.
    summary = capsys.readouterr().out.split("hf-medai: lesion_classification finished: ")[-1].splitlines()
    assert summary[0] == str(out)
    key, label = ("auroc", "AUROC") if m["auroc"] is not None else ("accuracy", "accuracy")  # a class may be absent
    ci = (
        f" (95% CI {m[key + '_ci_low']:.3f} to {m[key + '_ci_high']:.3f})"
        if m.get(key + "_ci_low") is not None
        else ""
    )
    assert summary[1] == f"  headline: test {label} {m[key]:.3f}{ci}, n={m['n']}"
    assert summary[2].startswith("  kept:     checkpoint-4 (step 4 of 4, epoch ") and "validation AUROC" in summary[2]
    assert m["class_names"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"] and m["positive_class"] is None
    pred = pd.read_csv(out / "predictions.csv")
    scores = pred[[f"score_{c}" for c in m["class_names"]]].to_numpy()
    y = pred["label"].map({c: i for i, c in enumerate(m["class_names"])}).to_numpy()
    assert np.allclose(scores.sum(1), 1, atol=1e-5)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, scores.argmax(1)))
    present = sorted(set(y))
    if len(present) == len(m["class_names"]):
        assert m["auroc"] == pytest.approx(roc_auc_score(y, scores, multi_class="ovr", average="macro"))
    card = (out / "README.md").read_text()
    assert "(7 classes)" in card and f"| Accuracy | {m['accuracy']:.3f}" in card


def test_balanced_sampler_draws_classes_evenly(sample, tmp_path):
    import torch

    seen = []
    out = tmp_path / "balanced"
    original = recipe.LesionTrainer._get_train_sampler

    def spy(self, train_dataset=None):
        sampler = original(self, train_dataset)
        seen.append(sampler)
        return sampler

    recipe.LesionTrainer._get_train_sampler = spy
    try:
        recipe.main(
            [
                "--data_dir",
                str(sample),
                "--output_dir",
                str(out),
                "--class_balance",
                "balanced_sampler",
                "--max_steps",
                "2",
                "--save_strategy",
                "no",
                "--eval_strategy",
                "no",
                "--load_best_model_at_end",
                "false",
                *TINY[:6],
            ]
        )
    finally:
        recipe.LesionTrainer._get_train_sampler = original
    sampler = seen[0]
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler)
    labels = np.asarray(sampler.weights)  # weight 1/count per row: each class carries the same total weight
    totals = {round(float(w) * (labels == w).sum(), 6) for w in np.unique(labels)}
    assert len(totals) == 1


def _test_images(run, sample):
    """The run's test images, in predictions.csv order, decoded as a user would (PIL, RGB)."""
    from PIL import Image

    from hf_medai.data.lesions import load_lesions

    ds, _, _ = load_lesions(sample, "ham10000", "binary")
    paths = dict(zip(ds["id"], ds["image_path"]))
    pred = pd.read_csv(run / "predictions.csv")
    return pred, [np.asarray(Image.open(paths[i]).convert("RGB")) for i in pred["id"]]


def test_artefact_audit_equals_a_direct_recomputation_with_the_pipeline(run, sample):
    """The robustness block's ink row, recomputed from the saved model (plain `pipeline`) and the perturbed images."""
    from PIL import Image
    from transformers import pipeline

    from hf_medai.data.artefacts import add_artefact

    m = json.loads((run / "metrics.json").read_text())
    section = m["robustness"]["image_artefacts"]
    assert set(section["rows"]) == {"ink", "ruler", "hair", "vignette", "colour_chart", "jpeg", "blur", "brightness"}
    pred, images = _test_images(run, sample)
    clf = pipeline("image-classification", model=str(run))

    def melanoma(arrays):
        return np.array(
            [{d["label"]: d["score"] for d in clf(Image.fromarray(a), top_k=2)}["melanoma"] for a in arrays]
        )

    before = melanoma(images)
    assert before == pytest.approx(pred["score_melanoma"].to_numpy(), abs=2e-3)
    after = melanoma(add_artefact(images, "ink", seed=section["seed"]))
    row, t = section["rows"]["ink"], m["threshold"]
    assert row["n"] == len(images) == section["n"]
    assert row["mean_change"] == pytest.approx(np.mean(after - before), abs=1e-5)
    assert row["mean_abs_change"] == pytest.approx(np.mean(np.abs(after - before)), abs=1e-5)
    assert row["n_flipped"] == int(np.sum((before >= t) != (after >= t)))
    y = (pred["label"] == "melanoma").to_numpy().astype(int)
    assert row["metric_after"] == pytest.approx(roc_auc_score(y, after), abs=1e-4)
    assert row["mean_change_ci"][0] <= row["mean_change"] <= row["mean_change_ci"][1]
    # the card states every verdict, and shows the grid the audit drew
    card = (run / "README.md").read_text()
    assert "## Robustness and shortcuts" in card
    for line in section["verdicts"].values():
        assert line in card
    assert (run / section["grid"]).is_file() and f"]({section['grid']})" in card


def test_audit_command_remakes_the_same_block_from_the_folder(run, tmp_path):
    import shutil

    from hf_medai.cards import render_card
    from hf_medai.cli import main as cli

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    m = json.loads((copy / "metrics.json").read_text())
    original = m.pop("robustness")
    (copy / "metrics.json").write_text(json.dumps(m))
    assert "No robustness audit was run" in str(render_card(copy))
    assert cli(["audit", str(copy)]) == 0
    assert json.loads((copy / "metrics.json").read_text())["robustness"] == original
    assert "## Robustness and shortcuts" in (copy / "README.md").read_text()


def test_robustness_audit_false_skips_the_audit_and_the_card_says_so(sample, tmp_path):
    import yaml

    out = tmp_path / "no_audit"
    args = ["--data_dir", str(sample), "--output_dir", str(out), "--max_steps", "1", "--robustness_audit", "false"]
    recipe.main([*args, *TINY])
    m = json.loads((out / "metrics.json").read_text())
    assert "robustness" not in m and not (out / "robustness_artefacts.png").exists()
    assert "No robustness audit was run for this model" in (out / "README.md").read_text()
    assert yaml.safe_load((out / "run_config.yaml").read_text())["robustness_audit"] is False
