"""FSDP: every Trainer recipe trained with 2 sharded CPU processes gives the model DDP gives.

Each recipe runs twice through `accelerate launch` with 2 processes (gloo), same flags and seed: once with DDP, once
with the shipped FSDP2 config (recipes/accelerate/fsdp.yaml, precision overridden to fp32 for CPU). accelerate runs
FSDP only on accelerator devices; tests/fsdp_on_cpu/sitecustomize.py turns it on for CPU processes, where PyTorch's
`fully_shard` works the same (DTensor shards, all-gather forward, reduce-scatter backward).
Asserted for the FSDP run: world size 2; each process held only its shard of the weights during training (the two
shards add up to the model); each process trained on the same examples as its DDP counterpart; the saved weights
(gathered by `MedTrainer.whole_model` and saved on the main process) and the written predictions/metrics equal the
DDP run's (to float tolerance); the folder reloads with the plain HF API.
The setups the recipes do not support under sharding refuse with a clear message before training.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from helpers import ROOT
from hf_medai.throughput import RECORD_DIR, RECORD_ENV
from test_accelerate_launch import _free_port

SHIM = ROOT / "tests" / "fsdp_on_cpu"
FSDP_CONFIG = ROOT / "recipes" / "accelerate" / "fsdp.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("sharded")
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HOME": str(home / "hf_home"), "HF_MEDAI_CACHE": str(home / "cache"),
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), RECORD_ENV: "1"}


def _launch(script: str, args: list[str], env, cwd, fsdp: bool) -> subprocess.CompletedProcess:
    setup = ["--config_file", str(FSDP_CONFIG)] if fsdp else ["--multi_gpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *setup, "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(ROOT / "recipes" / script), *args]
    if fsdp:
        env = {**env, "HF_MEDAI_FSDP_ON_CPU": "1", "PYTHONPATH": f"{SHIM}{os.pathsep}{env['PYTHONPATH']}"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)


def _errors(stderr: str) -> str:
    """The processes' own tracebacks (the launcher's summary that ends stderr says only that one failed)."""
    lines = [line for line in stderr.splitlines() if line.startswith("[rank") and not line.rstrip().endswith("^")]
    return "\n".join(lines[-60:]) or stderr[-4000:]


def _both(script: str, args: list[str], env, tmp_path):
    """(ddp_folder, fsdp_folder), both runs finished."""
    outs = []
    for fsdp in (False, True):
        out = tmp_path / ("fsdp" if fsdp else "ddp")
        proc = _launch(script, [*args, "--output_dir", str(out)], env, tmp_path, fsdp)
        assert proc.returncode == 0, _errors(proc.stderr)
        outs.append(out)
    return outs


def _records(out) -> list[dict]:
    return [json.loads((out / RECORD_DIR / f"rank-{r}.json").read_text()) for r in (0, 1)]


def _assert_sharded_like_ddp(ddp, fsdp, disjoint: bool = True):
    d, f = _records(ddp), _records(fsdp)
    assert [r["world_size"] for r in f] == [2, 2]
    total = f[0]["parameter_elements"]
    assert d[0]["parameter_elements_held"] == total  # DDP: every process holds the whole model
    for r in f:  # FSDP: each process held its own shard, about half
        assert r["parameter_elements"] == total and 0.3 * total < r["parameter_elements_held"] < 0.7 * total
        assert r["state_dict_sha256"] is None
    assert f[0]["parameter_elements_held"] + f[1]["parameter_elements_held"] == total
    assert [r["indices"] for r in f] == [r["indices"] for r in d]  # the same examples on the same rank
    if disjoint:
        assert not set(f[0]["indices"]) & set(f[1]["indices"])


def _assert_same_weights(ddp, fsdp, name="model.safetensors", atol=1e-4):
    a, b = load_file(ddp / name), load_file(fsdp / name)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == torch.float32, k
        torch.testing.assert_close(b[k], a[k], atol=atol, rtol=1e-4, msg=k)
    return a


def _assert_same_predictions(ddp, fsdp, prefix: str):
    a, b = pd.read_csv(ddp / "predictions.csv"), pd.read_csv(fsdp / "predictions.csv")
    cols = [c for c in a.columns if c.startswith(prefix)]
    assert cols and list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    np.testing.assert_allclose(b[cols].to_numpy(float), a[cols].to_numpy(float), atol=1e-4)


def test_lesion_recipe_fsdp_equals_ddp(env, tmp_path):
    from transformers import AutoModelForImageClassification

    from hf_medai.data.synthetic.lesions import write_ham10000

    ham = write_ham10000(tmp_path / "ham", n=160, seed=5)
    # weighted loss: the prior correction is folded into the head after the gather
    ddp, fsdp = _both("lesion_classification.py", ["--data_dir", str(ham), "--max_steps", "4", "--image_size", "32",
                                                   "--per_device_train_batch_size", "4", "--gradient_accumulation_steps",
                                                   "2", "--n_bootstrap", "20", "--eval_strategy", "no",
                                                   "--load_best_model_at_end", "false", "--save_strategy", "no",
                                                   "--class_balance", "weighted_loss"], env, tmp_path)
    _assert_sharded_like_ddp(ddp, fsdp)
    _assert_same_weights(ddp, fsdp)
    _assert_same_predictions(ddp, fsdp, "score_")
    m = json.loads((fsdp / "metrics.json").read_text())
    assert m["throughput"]["world_size"] == 2 and m["training"]["global_step"] == 4
    assert m["training"]["prior_correction"] is not None
    assert m["training"]["num_parameters"] == _records(fsdp)[0]["parameter_elements"]
    reloaded = AutoModelForImageClassification.from_pretrained(fsdp)  # the plain HF API
    assert reloaded.config.id2label == AutoModelForImageClassification.from_pretrained(ddp).config.id2label


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    from hf_medai.data.synthetic.ehr import write_mimic

    return write_mimic(tmp_path_factory.mktemp("mimic") / "mimic3", "mimic-iii", n_patients=100, seed=1)


def test_clinical_outcomes_fsdp_equals_ddp(env, mimic, tmp_path):
    from test_clinical_recipes import FAST, tiny_bert

    encoder = tiny_bert(tmp_path / "enc")
    ddp, fsdp = _both("clinical_outcomes.py", ["--data_dir", str(mimic), "--model_name_or_path", str(encoder), *FAST,
                                               "--task", "mortality", "--max_length", "64", "--max_steps", "3"],
                      env, tmp_path)
    _assert_sharded_like_ddp(ddp, fsdp)
    _assert_same_weights(ddp, fsdp)  # calibration (prior shift, temperature) folded in after the gather
    _assert_same_predictions(ddp, fsdp, "score_")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(a tiny random Llama saved as a folder, 16 MedQA-format questions)."""
    from hf_medai.data.medqa import sample_path
    from hf_medai.models.causal_lm import tiny_llama

    root = tmp_path_factory.mktemp("qa")
    model, tokenizer = tiny_llama(seed=0)
    model.save_pretrained(root / "llama")
    tokenizer.save_pretrained(root / "llama")
    questions = root / "medqa.jsonl"
    questions.write_text("\n".join(sample_path("medqa").read_text().splitlines()[:16]) + "\n")
    return root / "llama", questions


def test_medqa_lora_fsdp_equals_ddp(env, llama, tmp_path):
    llama, questions = llama
    ddp, fsdp = _both("medqa_lora.py", ["--model_name_or_path", str(llama), "--data_dir", str(questions),
                                        "--max_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate",
                                        "0.01", "--n_bootstrap", "20", "--min_group_size", "2",
                                        "--generate_max_new_tokens", "4", "--safety_max_new_tokens", "0",
                                        "--position_bias_rotations", "0", "--logging_steps", "1"], env, tmp_path)
    # 11 training questions: the distributed sampler pads the epoch to 12 by repeating one, on both setups
    _assert_sharded_like_ddp(ddp, fsdp, disjoint=False)
    adapter = _assert_same_weights(ddp, fsdp, "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)  # the adapter alone, not the base weights
    _assert_same_predictions(ddp, fsdp, "score_")


def test_setups_that_cannot_shard_are_refused_before_training(env, mimic, tmp_path):
    from hf_medai.data.synthetic.lesions import write_ham10000
    from test_clinical_recipes import FAST, tiny_bert

    # BERT's masked-LM head registers its output bias twice (accelerate's FSDP2 groups would split it)
    mlm = _launch("clinical_pretraining.py", ["--data_dir", str(mimic), "--model_name_or_path",
                                              str(tiny_bert(tmp_path / "mlm", masked_lm=True)), "--max_length", "32",
                                              "--max_steps", "2", "--eval_windows", "16", "--n_bootstrap", "10",
                                              "--output_dir", str(tmp_path / "mlm_run")], env, tmp_path, fsdp=True)
    assert mlm.returncode != 0 and "FSDP2 cannot shard BertForMaskedLM: its parameter 'cls.predictions.bias'" in mlm.stderr
    assert not list((tmp_path / "mlm_run").glob("checkpoint-*"))

    multi = _launch("clinical_outcomes.py", ["--data_dir", str(mimic), "--model_name_or_path",
                                             str(tiny_bert(tmp_path / "enc")), *FAST, "--task", "mortality,readmission",
                                             "--max_length", "64", "--max_steps", "2", "--output_dir",
                                             str(tmp_path / "multi")], env, tmp_path, fsdp=True)
    assert multi.returncode != 0 and "cannot be trained with FSDP or DeepSpeed ZeRO-3" in multi.stderr
    assert not list((tmp_path / "multi").glob("checkpoint-*")) and not (tmp_path / "multi" / "metrics.json").exists()

    ham = write_ham10000(tmp_path / "ham", n=40, seed=1)
    diffusion = _launch("image_diffusion.py", ["--data_dir", str(ham), "--output_dir", str(tmp_path / "diff"),
                                               "--resolution", "16", "--max_steps", "1"], env, tmp_path, fsdp=True)
    assert diffusion.returncode != 0 and "runs one process or data-parallel (DDP) only" in diffusion.stderr


def _resume_matches_uninterrupted(script: str, args: list[str], env, tmp_path, weights: str, keep: str) -> dict:
    """Run to the end with checkpoints; then delete everything after `keep` and resume with `last` in the same
    folder. Returns the resumed run's metrics; asserts it saved the weights the uninterrupted run saved."""
    out = tmp_path / "run"
    proc = _launch(script, [*args, "--output_dir", str(out)], env, tmp_path, fsdp=True)
    assert proc.returncode == 0, _errors(proc.stderr)
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) >= 2
    for ckpt in checkpoints:  # weights as safetensors only: no pickled copy of the model to resume from
        assert not list(ckpt.glob("pytorch_model*")), sorted(p.name for p in ckpt.iterdir())
        assert list(ckpt.glob("*.safetensors"))
    final = load_file(out / weights)
    for path in out.iterdir():
        if path.name != keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    proc = _launch(script, [*args, "--output_dir", str(out), "--resume_from_checkpoint", "last"], env, tmp_path, fsdp=True)
    assert proc.returncode == 0, _errors(proc.stderr)
    resumed = load_file(out / weights)
    assert sorted(resumed) == sorted(final)
    for k in final:
        torch.testing.assert_close(resumed[k], final[k], atol=1e-5, rtol=1e-5, msg=k)
    return json.loads((out / "metrics.json").read_text())


def test_fsdp_lesion_run_resumes_and_loads_its_best_checkpoint(env, tmp_path):
    from hf_medai.data.synthetic.lesions import write_ham10000

    ham = write_ham10000(tmp_path / "ham", n=160, seed=5)
    m = _resume_matches_uninterrupted(
        "lesion_classification.py",
        ["--data_dir", str(ham), "--max_steps", "4", "--image_size", "32", "--per_device_train_batch_size", "4",
         "--n_bootstrap", "20", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "steps",
         "--eval_steps", "2", "--load_best_model_at_end", "true", "--save_total_limit", "5"],
        env, tmp_path, "model.safetensors", keep="checkpoint-2")
    assert m["training"]["resumed_from"].endswith("checkpoint-2") and m["training"]["global_step"] == 4
    assert m["training"]["best_checkpoint"]  # the best of checkpoint-2/-4 was reloaded into the shards at the end


def test_fsdp_lora_run_resumes(env, llama, tmp_path):
    llama, questions = llama
    m = _resume_matches_uninterrupted(
        "medqa_lora.py",
        ["--model_name_or_path", str(llama), "--data_dir", str(questions), "--max_steps", "3",
         "--per_device_train_batch_size", "2", "--learning_rate", "0.01", "--warmup_steps", "0", "--save_strategy",
         "steps", "--save_steps", "1", "--save_total_limit", "5", "--n_bootstrap", "20", "--min_group_size", "2", "--generate_max_new_tokens", "4",
         "--safety_max_new_tokens", "0", "--position_bias_rotations", "0"],
        env, tmp_path, "adapter_model.safetensors", keep="checkpoint-2")
    assert m["training"]["resumed_from"].endswith("checkpoint-2") and m["training"]["global_step"] == 3
