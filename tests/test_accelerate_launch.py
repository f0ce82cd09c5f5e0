"""The lesion recipe through `accelerate launch`, with 1 and with 2 real CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from helpers import QUICK_RUN, ROOT, accelerate_launch


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from hf_medai.data.synthetic.lesions import write_ham10000

    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", n=160, seed=5)


@pytest.mark.parametrize("processes", [1, 2])
def test_accelerate_launch_world_size(processes, sample, tmp_path):
    out = tmp_path / "run"
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "HF_HOME": str(tmp_path / "hf_home"),  # no user default_config.yaml
        "HF_MEDAI_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        *accelerate_launch(processes),  # several: --multi_gpu, with ACCELERATE_USE_CPU=1 real DDP over gloo
        str(ROOT / "recipes" / "lesion_classification.py"),
        "--data_dir",
        str(sample),
        "--output_dir",
        str(out),
        "--max_steps",
        "4",
        "--image_size",
        "32",
        "--from_scratch",
        "true",
        "--per_device_train_batch_size",
        "8",
        *QUICK_RUN,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["throughput"]["world_size"] == processes
    assert m["throughput"]["global_batch_size"] == 8 * processes
    assert m["training"]["global_step"] == 4
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
