"""`hf-medai data | card | evaluate` from a run folder alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers import QUICK_RUN, load_recipe
from hf_medai.cli import main as cli

recipe = load_recipe("lesion_classification")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert cli(["data", "lesions", "--out", str(root / "ham"), "--n", "160", "--seed", "1"]) == 0
    out = root / "run"
    recipe.main(
        [
            "--data_dir",
            str(root / "ham"),
            "--output_dir",
            str(out),
            "--max_steps",
            "4",
            "--image_size",
            "32",
            "--from_scratch",
            "true",
            "--per_device_train_batch_size",
            "16",
            *QUICK_RUN,
        ]
    )
    return root, out


def test_card_command_rewrites_the_card_from_the_folder(trained):
    _, out = trained
    first = (out / "README.md").read_text()
    (out / "README.md").unlink()
    assert cli(["card", str(out)]) == 0
    second = (out / "README.md").read_text()
    strip = lambda t: [l for l in t.splitlines() if "**Date:**" not in l]
    assert strip(first) == strip(second)


def test_evaluate_external_data_keeps_the_validation_threshold(trained):
    root, out = trained
    assert cli(["data", "lesions", "--out", str(root / "external"), "--n", "120", "--seed", "9"]) == 0
    ext = root / "ext_report"
    assert cli(["evaluate", str(out), "--data", str(root / "external"), "--out", str(ext)]) == 0
    trained_m = json.loads((out / "metrics.json").read_text())
    m = json.loads((ext / "metrics.json").read_text())
    assert m["threshold"] == trained_m["threshold"] and m["threshold_source"] == "given"
    pred = pd.read_csv(ext / "predictions.csv")
    assert len(pred) == 120 == m["n"]
    assert m["auroc"] == pytest.approx(roc_auc_score(pred["label"] == "melanoma", pred["score_melanoma"]))
    assert (ext / "README.md").is_file() and "fitzpatrick" in m["subgroups"]
    # the folder exists now: a second run refuses to overwrite it
    assert cli(["evaluate", str(out), "--data", str(root / "external"), "--out", str(ext)]) == 2


def test_audit_on_external_data_writes_a_report_with_the_robustness_section(trained):
    root, out = trained
    if not (root / "external").exists():
        assert cli(["data", "lesions", "--out", str(root / "external"), "--n", "120", "--seed", "9"]) == 0
    ext = root / "ext_audit"
    assert cli(["audit", str(out), "--data", str(root / "external"), "--out", str(ext)]) == 0
    m = json.loads((ext / "metrics.json").read_text())
    section = m["robustness"]["image_artefacts"]
    assert (
        section["n"] == m["n"] == 120
        and section["threshold"] == json.loads((out / "metrics.json").read_text())["threshold"]
    )
    assert (ext / section["grid"]).is_file()
    card = (ext / "README.md").read_text()
    assert "External evaluation" in card and "## Robustness and shortcuts" in card
    # --data needs --out; a second audit into the same folder is refused
    assert cli(["audit", str(out), "--data", str(root / "external")]) == 2
    assert cli(["audit", str(out), "--data", str(root / "external"), "--out", str(ext)]) == 2


def test_console_script_help_is_fast_and_lists_commands():
    proc = subprocess.run([sys.executable, "-m", "hf_medai.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in ["data", "evaluate", "audit", "card", "push"]:
        assert command in proc.stdout
