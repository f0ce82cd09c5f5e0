"""A non-editable install works on its own: the wheel carries everything the library reads (card templates, metric
modules, bundled samples)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from helpers import ROOT, load_recipe


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("hf_medai-*.whl")
    return path


def test_wheel_carries_the_package_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    templates = [n for n in names if n.startswith("hf_medai/model_cards/")]
    assert "hf_medai/model_cards/image_classifier.md" in templates and len(templates) >= 6
    assert any(n.startswith("hf_medai/evaluation/metrics/") and n.endswith(".py") for n in names)
    assert any(n.startswith("hf_medai/data/samples/") for n in names)


def test_card_written_from_a_wheel_install(wheel, tmp_path):
    run = tmp_path / "run"
    load_recipe("lesion_classification").main(
        [
            "--output_dir",
            str(run),
            "--synthetic_n",
            "200",
            "--max_steps",
            "2",
            "--image_size",
            "32",
            "--from_scratch",
            "true",
            "--per_device_train_batch_size",
            "16",
            "--n_bootstrap",
            "20",
            "--min_group_size",
            "5",
        ]
    )
    (run / "README.md").unlink()
    venv = tmp_path / "venv"
    # The dependencies come from this environment; hf_medai itself only from the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # --ignore-installed: the editable install of this checkout (same version) is visible through the system site.
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import json, sys, hf_medai.cards as cards; path = cards.write_card(sys.argv[1]); "
        "print(json.dumps({'module': cards.__file__, 'card': str(path)}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [python, "-c", code, str(run)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["module"].startswith(str(venv)), out  # the installed copy, not this checkout
    card = (run / "README.md").read_text()
    assert "## Intended use" in card or "intended use" in card.lower()
