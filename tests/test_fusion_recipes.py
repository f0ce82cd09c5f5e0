"""End to end: the two fusion recipes on small synthetic samples, the ablation they report, reloading, resuming."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers import QUICK_RUN, ROOT, accelerate_launch, load_recipe

lesion = load_recipe("lesion_fusion")
clinical = load_recipe("clinical_fusion")

LESION_TINY = [
    *("--image_size", "32", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64"),
    *("--n_bootstrap", "50", "--min_group_size", "5", "--logging_steps", "1", "--learning_rate", "0.002"),
    *("--save_strategy", "steps", "--eval_strategy", "steps", "--save_steps", "3", "--eval_steps", "3"),
]


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    from hf_medai.data.synthetic.lesions import write_ham10000

    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", n=240, seed=3)


@pytest.fixture(scope="module")
def lesion_run(ham, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lesion_fusion"
    lesion.main(["--data_dir", str(ham), "--output_dir", str(out), "--max_steps", "6", *LESION_TINY])
    return out


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    from hf_medai.data.synthetic.ehr import write_mimic

    return write_mimic(tmp_path_factory.mktemp("mimic") / "mimic", "mimic-iv", n_patients=120, seed=2)


@pytest.fixture(scope="module")
def clinical_run(mimic, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "clinical_fusion"
    clinical.main(
        [
            *("--data_dir", str(mimic), "--output_dir", str(out), "--max_steps", "4", "--max_length", "48"),
            *("--per_device_train_batch_size", "16", "--n_bootstrap", "50", "--min_group_size", "5"),
            *("--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "2", "--save_steps", "2"),
        ]
    )
    return out


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize(
    "which, single, tabular",
    [("lesion_run", "image_only", "metadata_only"), ("clinical_run", "note_only", "EHR_only")],
)
def test_ablation_table_scores_equal_sklearn_on_the_same_test_rows(request, which, single, tabular):
    run = request.getfixturevalue(which)
    m = metrics(run)
    rows = {r["model"]: r for r in m["ablation"]["rows"]}
    assert set(rows) == {"fused", single, tabular}
    assert len(rows["fused"]["modalities"]) == 2 and len(rows[single]["modalities"]) == 1
    pred = pd.read_csv(run / "predictions.csv")
    positive = m["class_names"][1]
    auroc = roc_auc_score(pred["label"] == positive, pred[f"score_{positive}"])
    assert rows["fused"]["test_auroc"] == pytest.approx(auroc) == pytest.approx(m["auroc"])
    assert rows["fused"]["test_auroc_ci_low"] == pytest.approx(m["auroc_ci_low"])  # the same resamples
    scores = np.load(run / "ablation" / single / "scores.npz")
    y = (pred["label"] == positive).to_numpy()
    assert rows[single]["test_auroc"] == pytest.approx(roc_auc_score(y, scores["test"][:, 1]))
    diff = rows[single]["fused_minus_model"]
    assert diff == pytest.approx(auroc - rows[single]["test_auroc"])
    assert m["ablation"]["best_single"] in {single, tabular}
    assert "validation" in m["ablation"]["best_single_chosen_on"]
    missing = {r["model"]: r for r in m["missing_modality"]}
    assert len(missing) == 2 and all(r["test_auroc"] is not None for r in missing.values())
    assert m["throughput"]["train_samples_per_second"] > 0 and m["throughput"]["peak_rss_mb"] > 0


def test_single_modality_baseline_has_no_tabular_input(lesion_run):
    from hf_medai.models.fusion import FusionModel

    baseline = FusionModel.from_pretrained(lesion_run / "ablation" / "image_only")
    assert not baseline.config.use_tabular and not hasattr(baseline, "tabular")
    fused = FusionModel.from_pretrained(lesion_run)
    assert fused.config.use_tabular and fused.config.categorical_features == ["sex", "site"]
    assert fused.config.numeric_features == ["age"]


def test_lesion_folder_reloads_and_reproduces_predictions_csv(lesion_run, ham):
    from PIL import Image

    from hf_medai.data.lesions import load_lesions
    from hf_medai.models.fusion import FusionModel, FusionProcessor

    pred = pd.read_csv(lesion_run / "predictions.csv").head(16)
    ds, _, _ = load_lesions(ham, "ham10000", "binary")
    rows = {r["id"]: r for r in ds}
    model = FusionModel.from_pretrained(lesion_run).eval()
    processor = FusionProcessor.from_pretrained(lesion_run)
    images = [Image.open(rows[i]["image_path"]).convert("RGB") for i in pred["id"]]
    tabular = [{k: rows[i][k] for k in ("age", "sex", "site")} for i in pred["id"]]
    with torch.no_grad():
        probs = torch.softmax(model(**processor(images=images, tabular=tabular)).logits, -1)[:, 1].numpy()
    np.testing.assert_allclose(probs, pred["score_melanoma"], atol=2e-3)


def test_clinical_cohort_starts_at_the_prediction_time_and_reloads(clinical_run, mimic):
    from hf_medai.clinical_tasks import load_task
    from hf_medai.data.report import DataReport  # noqa: F401  (the report type the recipe fills)
    from hf_medai.models.fusion import FusionModel, FusionProcessor

    m = metrics(clinical_run)
    dropped = m["data_report"]["ended_before_prediction_time"]
    assert dropped["window_hours"] == 24.0 and sum(dropped[s] for s in ("train", "validation", "test")) > 0

    args = clinical.parse_args(*clinical.CONFIG_DATACLASSES, args=["--data_dir", str(mimic), "--output_dir", "x"])
    data_args = args[0]
    task = load_task(data_args.split_spec(str(mimic), "mortality"))
    splits = clinical.before_prediction_time(dict(task.splits), 24.0, task.report)
    assert all(d * 24 > 24 for d in splits["test"]["los_days"])
    frames = clinical.structured_frames(splits, str(mimic), data_args, task.report)
    pred = pd.read_csv(clinical_run / "predictions.csv")
    test = splits["test"]
    assert [str(i) for i in pred["id"]] == [str(i) for i in test["id"]]
    model = FusionModel.from_pretrained(clinical_run).eval()
    processor = FusionProcessor.from_pretrained(clinical_run)
    n = 12
    batch = processor(text=test["text"][:n], tabular=frames["test"].head(n).to_dict("records"))
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, -1)[:, 1].numpy()
    np.testing.assert_allclose(probs, pred["score_died"].head(n), atol=1e-4)


def test_clinical_fusion_counterfactual_audit_holds_the_ehr_fixed(clinical_run, mimic):
    """The sex-swap row recomputed with FusionModel / FusionProcessor: each note, as written and swapped, beside its
    own admission's structured features; then `hf-medai audit RUN_DIR` writes the same block again."""
    from hf_medai.cli import main as cli
    from hf_medai.clinical_tasks import load_task
    from hf_medai.evaluation.note_counterfactuals import swap_sex
    from hf_medai.models.fusion import FusionModel, FusionProcessor

    m = metrics(clinical_run)
    sec = m["robustness"]["counterfactual_notes"]
    data_args = clinical.parse_args(
        *clinical.CONFIG_DATACLASSES, args=["--data_dir", str(mimic), "--output_dir", "x"]
    )[0]
    task = load_task(data_args.split_spec(str(mimic), "mortality"))
    splits = clinical.before_prediction_time(dict(task.splits), 24.0, task.report)
    rows = clinical.structured_frames(splits, str(mimic), data_args, task.report)["test"].to_dict("records")
    model, processor = FusionModel.from_pretrained(clinical_run).eval(), FusionProcessor.from_pretrained(clinical_run)

    def risk(texts):
        with torch.no_grad():
            return torch.softmax(model(**processor(text=texts, tabular=rows)).logits, -1)[:, 1].numpy()

    texts = splits["test"]["text"]
    before, after = risk(texts), risk([swap_sex(t)[0] for t in texts])
    changed = np.array([swap_sex(t)[1] > 0 for t in texts])
    change = (after - before)[changed]
    row = sec["rows"]["sex"]
    assert row["n"] == changed.sum() and row["mean_abs_change"] == pytest.approx(np.abs(change).mean(), abs=1e-5)
    assert row["n_flipped"] == int(((before >= m["threshold"]) != (after >= m["threshold"]))[changed].sum())
    assert "### Counterfactual notes" in (clinical_run / "README.md").read_text()
    cli(["audit", str(clinical_run)])
    assert metrics(clinical_run)["robustness"] == m["robustness"]


@pytest.mark.parametrize("stage", ["image_only", "fused"])
def test_interrupted_fusion_run_resumes_the_stage_it_stopped_in(ham, tmp_path, stage):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):  # in one stage: the single-modality model (ablation/image_only) or the fused one
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 4 and ("ablation" in args.output_dir) == (stage == "image_only"):
                raise RuntimeError("simulated crash")

    out = tmp_path / "run"
    flags = ["--data_dir", str(ham), "--output_dir", str(out), "--max_steps", "6", *LESION_TINY]
    with pytest.raises(RuntimeError, match="simulated crash"):
        lesion.main(flags, callbacks=[Crash()])
    assert not (out / "metrics.json").exists()
    single = out / "ablation" / "image_only"
    if stage == "image_only":
        assert (single / "checkpoint-3").is_dir() and not (single / "scores.npz").exists()
        assert not list(out.glob("checkpoint-*"))
    else:
        assert (single / "scores.npz").is_file() and (out / "checkpoint-3").is_dir()
        scores_written = (single / "scores.npz").stat().st_mtime_ns
    lesion.main([*flags, "--resume_from_checkpoint", "last"])
    m = metrics(out)
    assert m["training"]["global_step"] == 6 and m["training"]["started_from"] == "ablation/image_only"
    if stage == "fused":
        assert m["training"]["resumed_from"].endswith("checkpoint-3")
        assert (single / "scores.npz").stat().st_mtime_ns == scores_written  # the finished stage is reused
    else:
        assert m["training"]["resumed_from"] is None  # the fused model had not started
        assert (single / "scores.npz").is_file()
    assert {r["model"] for r in m["ablation"]["rows"]} == {"fused", "image_only", "metadata_only"}


def test_fused_model_starts_from_the_single_modality_backbone(lesion_run):
    from hf_medai.models.fusion import FusionModel

    assert metrics(lesion_run)["training"]["started_from"] == "ablation/image_only"
    fused = FusionModel.from_pretrained(lesion_run)
    single = FusionModel.from_pretrained(lesion_run / "ablation" / "image_only")
    # trained on after the start, so not equal, but far closer to it than to a fresh backbone
    fresh = FusionModel.from_backbone(single.config.backbone_config, None, ["a", "b"])
    name = "embeddings.patch_embeddings.projection.weight"
    a, b, c = (dict(x.backbone.named_parameters())[name] for x in (fused, single, fresh))
    assert (a - b).norm() < 0.5 * (c - b).norm()


def test_lesion_fusion_under_accelerate_launch_with_two_processes(ham, tmp_path):
    out = tmp_path / "run"
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MEDAI_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        *accelerate_launch(2),
        str(ROOT / "recipes" / "lesion_fusion.py"),
        *("--data_dir", str(ham), "--output_dir", str(out), "--max_steps", "3", "--image_size", "32"),
        *("--per_device_train_batch_size", "8"),
        *QUICK_RUN,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    m = metrics(out)
    assert m["throughput"]["world_size"] == 2 and m["throughput"]["global_batch_size"] == 16
    assert m["training"]["global_step"] == 3
    pred = pd.read_csv(out / "predictions.csv")
    assert pred["id"].is_unique and len(pred) == m["n"]  # DDP's padded duplicates are gone
    assert {r["model"] for r in m["ablation"]["rows"]} == {"fused", "image_only", "metadata_only"}
