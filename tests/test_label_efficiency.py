"""Label subsets, and the label-efficiency experiment end to end on a small synthetic sample."""

from __future__ import annotations

import json
from collections import Counter

import datasets
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from transformers import ViTConfig, ViTImageProcessor, ViTModel

from helpers import load_recipe
from hf_medai.data.splits import label_subset


def _toy(n_groups=200, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        label = int(rng.random() < 0.15)
        rows += [{"patient_id": f"p{g}", "label": label}] * int(rng.integers(1, 4))
    return datasets.Dataset.from_list(rows)


def test_label_subset_is_grouped_stratified_nested_and_deterministic():
    ds = _toy()
    small, large = label_subset(ds, 0.05, "patient_id"), label_subset(ds, 0.3, "patient_id")
    groups = lambda d: set(d["patient_id"])  # noqa: E731
    assert groups(small) < groups(large) < groups(ds)  # nested
    per_group = Counter(ds["patient_id"])
    assert all(Counter(small["patient_id"])[g] == per_group[g] for g in groups(small))  # whole patients
    assert set(small["label"]) == {0, 1}  # at least one patient of each label
    positives = {g for g, v in zip(ds["patient_id"], ds["label"]) if v == 1}
    assert len(groups(large) & positives) == int(np.ceil(0.3 * len(positives)))  # stratified
    assert label_subset(ds, 0.3, "patient_id")["patient_id"] == large["patient_id"]  # deterministic
    assert label_subset(ds, 0.3, "patient_id", seed=1)["patient_id"] != large["patient_id"]
    assert label_subset(ds, 1.0, "patient_id") is ds
    with pytest.raises(ValueError, match="label fraction"):
        label_subset(ds, 0.0, "patient_id")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from hf_medai.data.synthetic.lesions import write_ham10000

    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", n=300, seed=4)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A stand-in for an image_pretraining run folder: a saved ViT encoder with its processor."""
    from hf_medai.models.vision import TINY_VIT

    folder = tmp_path_factory.mktemp("encoder")
    ViTModel(ViTConfig(image_size=32, **TINY_VIT), add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder
    )
    return folder


def test_experiment_trains_every_fraction_alike_and_writes_its_table(sample, encoder, tmp_path):
    experiment = load_recipe("label_efficiency")
    flags = [
        "--output_dir",
        str(tmp_path / "le"),
        "--pretrained",
        str(encoder),
        "--fractions",
        "0.1",
        "1.0",
        "--max_steps",
        "6",
        "--n_bootstrap",
        "30",
        "--classifier_args",
        f"--data_dir {sample} --image_size 32 --per_device_train_batch_size 16 --n_bootstrap 10 --min_group_size 5",
    ]
    out = experiment.main(flags)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == "label_efficiency" and [r["fraction"] for r in metrics["rows"]] == [0.1, 1.0]
    small, full = metrics["rows"]
    assert small["train_examples"] < full["train_examples"]
    for row in metrics["rows"]:
        runs = {e: out / experiment.run_name(e, row["fraction"]) for e in experiment.ENCODERS}
        m = {e: json.loads((runs[e] / "metrics.json").read_text()) for e in runs}
        # Same steps, same training images, same test images for both encoders; only the start differs.
        assert m["scratch"]["training"]["global_step"] == m["pretrained"]["training"]["global_step"] == 6
        assert m["scratch"]["splits"] == m["pretrained"]["splits"]
        assert m["pretrained"]["base_model"] == str(encoder) and "random init" in m["scratch"]["base_model"]
        assert m["scratch"]["training"]["kept_checkpoint"]["step"] == 6  # the final weights, not a chosen one
        # The table's numbers are each run's own, and the difference is theirs (scikit-learn on predictions.csv).
        import pandas as pd

        p = {e: pd.read_csv(runs[e] / "predictions.csv") for e in runs}
        y = (p["scratch"]["label"] == "melanoma").astype(int)
        aurocs = {e: roc_auc_score(y, p[e]["score_melanoma"]) for e in runs}
        assert row["scratch_auroc"] == pytest.approx(aurocs["scratch"])
        assert row["difference"] == pytest.approx(aurocs["pretrained"] - aurocs["scratch"])
        assert row["difference_ci_low"] <= row["difference"] <= row["difference_ci_high"]
    assert "| 10% |" in (out / "label_efficiency.md").read_text()
    assert (out / "label_efficiency.png").stat().st_size > 5000
    assert "Label efficiency" in (out / "README.md").read_text()

    # Interrupted after the first run: --resume reuses what finished and trains only what is missing.
    (out / "metrics.json").unlink()
    finished = out / experiment.run_name("pretrained", 1.0)
    before = (finished / "predictions.csv").read_text()
    import shutil

    shutil.rmtree(out / experiment.run_name("scratch", 1.0))
    experiment.main([*flags, "--resume", "true"])
    assert (finished / "predictions.csv").read_text() == before
    assert json.loads((out / "metrics.json").read_text())["rows"][1]["scratch_auroc"] == pytest.approx(
        full["scratch_auroc"]
    )  # same seed, same steps: the retrained run reproduces the first
    with pytest.raises(Exception, match="already holds a run"):
        experiment.main(flags)


def test_default_encoder_is_pretrained_once_then_read_from_the_cache(tmp_path, monkeypatch):
    experiment = load_recipe("label_efficiency")
    monkeypatch.setenv("HF_MEDAI_CACHE", str(tmp_path))
    calls = []

    def fake_pretraining(args):  # stands in for recipes/image_pretraining.py's main: writes a finished run folder
        calls.append(args)
        out = args[args.index("--output_dir") + 1]
        (tmp_path / out).mkdir(parents=True)
        (tmp_path / out / "metrics.json").write_text("{}")

    import importlib.util

    real = importlib.util.module_from_spec

    def module_from_spec(spec):
        module = real(spec)
        if spec.name == "image_pretraining":
            spec.loader.exec_module = lambda m: setattr(m, "main", fake_pretraining)
        return module

    monkeypatch.setattr(importlib.util, "module_from_spec", module_from_spec)
    first = experiment.default_pretrained_encoder()
    assert first == experiment.default_pretrained_encoder() and (first / "metrics.json").is_file()
    assert len(calls) == 1 and str(tmp_path) in str(first) and not first.with_name(first.name + ".partial").exists()


def test_notes_experiment_compares_two_text_encoders_on_the_same_admissions(tmp_path):
    from test_clinical_recipes import tiny_bert

    from hf_medai.data.synthetic.ehr import write_mimic

    experiment = load_recipe("label_efficiency")
    mimic = write_mimic(tmp_path / "mimic", "mimic-iii", n_patients=100, seed=1)
    base, other = tiny_bert(tmp_path / "base"), tiny_bert(tmp_path / "mlm", masked_lm=True)
    out = experiment.main(
        [
            "--modality",
            "notes",
            "--output_dir",
            str(tmp_path / "le"),
            "--scratch",
            str(base),
            "--pretrained",
            str(other),
            "--fractions",
            "0.3",
            "1.0",
            "--max_steps",
            "3",
            "--n_bootstrap",
            "20",
            "--classifier_args",
            f"--data_dir {mimic} --per_device_train_batch_size 8 --n_bootstrap 10 --min_group_size 5 --baseline false",
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    small, full = metrics["rows"]
    assert metrics["modality"] == "notes" and metrics["outcome"] == "mortality"
    assert (
        small["train_examples"] < full["train_examples"]
        and sum(small["train_label_counts"].values()) == (small["train_examples"])
    )
    for row in metrics["rows"]:
        runs = {e: out / experiment.run_name(e, row["fraction"]) for e in experiment.ENCODERS}
        m = {e: json.loads((runs[e] / "metrics.json").read_text()) for e in runs}
        assert m["scratch"]["recipe"] == "clinical_outcomes" and m["pretrained"]["base_model"] == str(other)
        assert m["scratch"]["training"]["global_step"] == m["pretrained"]["training"]["global_step"] == 3
        import pandas as pd

        p = {e: pd.read_csv(runs[e] / "predictions.csv", keep_default_na=False) for e in runs}
        assert list(p["scratch"]["id"]) == list(p["pretrained"]["id"])  # the same test admissions
        y = (p["scratch"]["label"] == "died").astype(int)
        diff = roc_auc_score(y, p["pretrained"]["score_died"]) - roc_auc_score(y, p["scratch"]["score_died"])
        assert row["difference"] == pytest.approx(diff)
    assert "| Training admissions |" in (out / "label_efficiency.md").read_text()
    assert "note classifier of `mortality`" in (out / "README.md").read_text()
