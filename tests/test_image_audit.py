"""Image artefacts (hf_medai.data.artefacts), the planted shortcut of the synthetic generator, and the check of the
toolkit itself: the artefact audit finds a model's reliance on a planted marker and raises no alarm without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hf_medai.data.artefacts import ARTEFACTS, INK, add_artefact


def _photo(seed=0, h=96, w=128):
    rng = np.random.default_rng(seed)
    base = np.full((h, w, 3), (200, 160, 140), dtype=np.float64) + rng.normal(0, 8, (h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    base[np.hypot(yy - h / 2, xx - w / 2) < 20] = (90, 50, 40)
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(ARTEFACTS))
def test_each_artefact_is_seeded_changes_the_image_and_leaves_the_input_alone(name):
    image = _photo()
    keep = image.copy()
    a = add_artefact([image], name, seed=3)[0]
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(image, keep), "the input must not change"
    assert np.abs(a.astype(int) - image.astype(int)).mean() > 0.5, "the artefact must be visible"
    assert np.array_equal(a, add_artefact([image], name, seed=3)[0]), "same seed, same drawing"


def test_ink_draws_purple_marker_away_from_the_lesion_centre():
    image = _photo()
    a = add_artefact([image], "ink", seed=0)[0]
    inked = np.all(np.abs(a.astype(int) - INK) < 10, axis=-1)
    assert inked.sum() > 30
    assert not inked[38:58, 54:74].any(), "the marking sits beside the lesion, not on it"


def test_artefacts_refuse_a_grey_image_and_an_unknown_name():
    with pytest.raises(ValueError, match="uint8"):
        add_artefact([np.zeros((8, 8), np.uint8)], "ink")
    with pytest.raises(ValueError, match="unknown artefact 'tattoo'"):
        add_artefact([_photo()], "tattoo")


def test_planted_shortcut_marks_melanomas_only_and_changes_nothing_else(tmp_path):
    import pandas as pd

    from hf_medai.data.synthetic.lesions import write_ham10000

    clean = write_ham10000(tmp_path / "clean", n=120, seed=5)
    planted = write_ham10000(tmp_path / "planted", n=120, seed=5, shortcut="ink", shortcut_rate=1.0)
    meta = pd.read_csv(clean / "HAM10000_metadata.csv")
    assert meta.equals(pd.read_csv(planted / "HAM10000_metadata.csv"))
    changed = []
    for image_id in meta["image_id"]:
        a = (clean / "HAM10000_images_part_1" / f"{image_id}.jpg").read_bytes()
        b = (planted / "HAM10000_images_part_1" / f"{image_id}.jpg").read_bytes()
        changed.append(a != b)
    changed = np.array(changed)
    assert np.array_equal(changed, (meta["dx"] == "mel").to_numpy()), "every melanoma, and nothing else"
    assert "Planted shortcut" in (planted / "SYNTHETIC_DATA.md").read_text()
    with pytest.raises(ValueError, match="unknown shortcut"):
        write_ham10000(tmp_path / "x", n=30, shortcut="tattoo")


def test_artefact_grid_shows_each_artefact(tmp_path):
    from hf_medai.evaluation.image_artefacts import artefact_grid

    path = artefact_grid([_photo(0), _photo(1)], tmp_path / "grid.png", tile=64)
    im = Image.open(path)
    assert im.size == (64 * (1 + len(ARTEFACTS)), 14 + 2 * 64)


SHORTCUT_RUN = [
    *("--image_size", "48", "--from_scratch", "true"),
    *("--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "128"),
    # 300 steps: at 150 the planted model had barely started to learn anything (ink +0.003 with transformers 5.25 /
    # accelerate 1.16, where earlier versions had reached +0.076), a margin too thin for a test
    *("--max_steps", "300", "--learning_rate", "0.001", "--warmup_steps", "0.1"),
    *("--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "150", "--save_steps", "150"),
    *("--n_bootstrap", "200", "--min_group_size", "5", "--report_to", "none"),
]


@pytest.fixture(scope="module")
def shortcut_runs(tmp_path_factory):
    """Two lesion models trained alike on the same images, one with ink on 90% of the training melanomas, both
    tested on one clean external sample (the marker exists in training only)."""
    from helpers import load_recipe
    from hf_medai.data.synthetic.lesions import write_ham10000

    recipe = load_recipe("lesion_classification")
    root = tmp_path_factory.mktemp("shortcut")
    test = write_ham10000(root / "test", n=240, seed=12)
    runs = {}
    for name, shortcut in (("clean", None), ("planted", "ink")):
        train = write_ham10000(root / f"train_{name}", n=480, seed=11, shortcut=shortcut, shortcut_rate=0.9)
        out = root / name
        recipe.main(["--data_dir", str(train), "--test_data_dir", str(test), "--output_dir", str(out), *SHORTCUT_RUN])
        runs[name] = json.loads((out / "metrics.json").read_text())["robustness"]["image_artefacts"]
    return runs


@pytest.mark.slow
def test_audit_finds_the_planted_shortcut(shortcut_runs):
    ink = shortcut_runs["planted"]["rows"]["ink"]
    # Measured at these settings: +0.83 (0.80-0.86), 89% of decisions flip up; the clean twin moves by 0.001.
    assert ink["mean_change_ci"][0] > 0.05, ink  # ink alone raises the melanoma probability, far beyond chance
    assert ink["flipped_up"] > 0.1 and ink["material"]
    assert "ink" in shortcut_runs["planted"]["material"]
    assert shortcut_runs["planted"]["verdicts"]["ink"].startswith(
        "Adding purple ink markings raises melanoma probability"
    )


@pytest.mark.slow
def test_audit_raises_no_alarm_on_the_model_trained_without_it(shortcut_runs):
    ink = shortcut_runs["clean"]["rows"]["ink"]
    assert not ink["material"], ink
    assert abs(ink["mean_change"]) < 0.05 and ink["flipped"] <= 0.05
    assert shortcut_runs["clean"]["verdicts"]["ink"].endswith("no material shift.")
