"""Sharded training: every Trainer recipe under FSDP2 and DeepSpeed ZeRO-2/3 gives the model DDP gives.

Each recipe runs through `accelerate launch` with 2 CPU processes (gloo), same flags and seed: with DDP, and with the
shipped configs recipes/accelerate/fsdp.yaml, deepspeed_zero2.yaml and deepspeed_zero3.yaml (precision overridden to
fp32 for CPU). accelerate enables FSDP and DeepSpeed only on accelerator devices; tests/sharding_on_cpu/
sitecustomize.py turns them on for CPU processes, where PyTorch's `fully_shard` and DeepSpeed's CPU accelerator run
unchanged (both over gloo).
Asserted for each sharded run: world size 2; under FSDP and ZeRO-3 each process held only its shard of the weights
during training (the shards add up to the model); each process trained on the same examples as its DDP counterpart;
the saved weights (gathered by `MedTrainer.whole_model`, saved on the main process) and the predictions/metrics equal
the DDP run's to float tolerance (measured differences are about 1e-6); the folder reloads with the plain HF API.
A run resumed from a checkpoint ends with the weights of the uninterrupted run. The setups the recipes do not support
refuse with a clear message before training.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from helpers import ROOT, accelerate_launch
from hf_medai.throughput import RECORD_DIR, RECORD_ENV

# About 5 minutes of 2-process runs on 2 CPU cores: `python -m pytest -m slow` (CI runs it after the default set).
pytestmark = pytest.mark.slow

SHIM = ROOT / "tests" / "sharding_on_cpu"
CONFIGS = ROOT / "recipes" / "accelerate"
SHARDED = ("fsdp", "zero3")  # no process holds the whole model

needs_deepspeed = pytest.mark.skipif(
    not __import__("importlib").util.find_spec("deepspeed"),
    reason="deepspeed not installed (pip install -e '.[deepspeed]')",
)
ZERO2 = pytest.param("zero2", marks=needs_deepspeed)
ZERO3 = pytest.param("zero3", marks=needs_deepspeed)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("sharded")
    return {
        **os.environ,
        "HF_HOME": str(home / "hf_home"),
        "HF_MEDAI_CACHE": str(home / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        RECORD_ENV: "1",
    }


def _launch(script: str, args: list[str], env, cwd, setup: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in env.items() if k != "ACCELERATE_USE_CPU"}
    shimmed = {"PYTHONPATH": f"{SHIM}{os.pathsep}{env['PYTHONPATH']}"}
    if setup == "ddp":
        launch, env = [], {**env, "ACCELERATE_USE_CPU": "1"}
    elif setup == "fsdp":
        launch, env = (
            ["--config_file", str(CONFIGS / "fsdp.yaml")],
            {**env, **shimmed, "ACCELERATE_USE_CPU": "1", "HF_MEDAI_FSDP_ON_CPU": "1"},
        )
    else:  # DeepSpeed's config carries the accumulation steps: the recipe's flag must match it (see the config)
        accumulation = (
            args[args.index("--gradient_accumulation_steps") + 1] if "--gradient_accumulation_steps" in args else "1"
        )
        launch = [
            "--config_file",
            str(CONFIGS / f"deepspeed_{setup}.yaml"),
            "--gradient_accumulation_steps",
            accumulation,
        ]
        env = {**env, **shimmed, "HF_MEDAI_DEEPSPEED_ON_CPU": "1"}
    cmd = accelerate_launch(2, str(ROOT / "recipes" / script), *args, options=launch, multi_gpu=setup == "ddp")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)


def _errors(stderr: str) -> str:
    """The processes' own tracebacks (the launcher's summary that ends stderr says only that one failed)."""
    lines = [line for line in stderr.splitlines() if line.startswith("[rank") and not line.rstrip().endswith("^")]
    return "\n".join(lines[-60:]) or stderr[-4000:]


def _run(script: str, args: list[str], env, out, setup: str):
    proc = _launch(script, [*args, "--output_dir", str(out)], env, out.parent, setup)
    assert proc.returncode == 0, _errors(proc.stderr)
    return out


def _records(out) -> list[dict]:
    return [json.loads((out / RECORD_DIR / f"rank-{r}.json").read_text()) for r in (0, 1)]


def _assert_trained_like_ddp(ddp, run, setup: str, disjoint: bool = True):
    d, r = _records(ddp), _records(run)
    assert [x["world_size"] for x in r] == [2, 2]
    total = r[0]["parameter_elements"]
    assert d[0]["parameter_elements_held"] == total  # DDP: every process holds the whole model
    if setup in SHARDED:  # each process held its own shard, about half
        for x in r:
            assert x["parameter_elements"] == total and 0.3 * total < x["parameter_elements_held"] < 0.7 * total
            assert x["state_dict_sha256"] is None
        assert r[0]["parameter_elements_held"] + r[1]["parameter_elements_held"] == total
    else:  # ZeRO-2 shards optimizer states and gradients; the weights stay whole, and the same on both processes
        assert r[0]["state_dict_sha256"] == r[1]["state_dict_sha256"] is not None
    assert [x["indices"] for x in r] == [x["indices"] for x in d]  # the same examples on the same rank
    if disjoint:
        assert not set(r[0]["indices"]) & set(r[1]["indices"])


def _assert_same_weights(ddp, run, name="model.safetensors", atol=1e-4):
    a, b = load_file(ddp / name), load_file(run / name)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == torch.float32, k
        torch.testing.assert_close(b[k], a[k], atol=atol, rtol=1e-4, msg=k)
    return a


def _assert_same_predictions(ddp, run, prefix: str):
    a, b = pd.read_csv(ddp / "predictions.csv"), pd.read_csv(run / "predictions.csv")
    cols = [c for c in a.columns if c.startswith(prefix)]
    assert cols and list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    np.testing.assert_allclose(b[cols].to_numpy(float), a[cols].to_numpy(float), atol=1e-4)


# -- lesion_classification -----------------------------------------------------------------------------------------

# weighted loss: the prior correction is folded into the head after the gather
LESION = [
    "--max_steps",
    "4",
    "--image_size",
    "32",
    "--from_scratch",
    "true",
    "--per_device_train_batch_size",
    "4",
    "--gradient_accumulation_steps",
    "2",
    "--n_bootstrap",
    "20",
    "--eval_strategy",
    "no",
    "--load_best_model_at_end",
    "false",
    "--save_strategy",
    "no",
    "--class_balance",
    "weighted_loss",
]


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    from hf_medai.data.synthetic.lesions import write_ham10000

    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", n=160, seed=5)


@pytest.fixture(scope="module")
def lesion_ddp(ham, env, tmp_path_factory):
    return _run(
        "lesion_classification.py",
        ["--data_dir", str(ham), *LESION],
        env,
        tmp_path_factory.mktemp("lesion") / "ddp",
        "ddp",
    )


@pytest.mark.parametrize("setup", ["fsdp", ZERO2, ZERO3])
def test_lesion_recipe_sharded_equals_ddp(setup, ham, lesion_ddp, env, tmp_path):
    from transformers import AutoModelForImageClassification

    run = _run("lesion_classification.py", ["--data_dir", str(ham), *LESION], env, tmp_path / setup, setup)
    _assert_trained_like_ddp(lesion_ddp, run, setup)
    _assert_same_weights(lesion_ddp, run)
    _assert_same_predictions(lesion_ddp, run, "score_")
    m = json.loads((run / "metrics.json").read_text())
    assert m["throughput"]["world_size"] == 2 and m["training"]["global_step"] == 4
    assert m["training"]["prior_correction"] is not None
    assert m["training"]["num_parameters"] == _records(run)[0]["parameter_elements"]
    reloaded = AutoModelForImageClassification.from_pretrained(run)  # the plain HF API
    assert reloaded.config.id2label == AutoModelForImageClassification.from_pretrained(lesion_ddp).config.id2label


# -- clinical_outcomes, clinical_pretraining -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    from hf_medai.data.synthetic.ehr import write_mimic

    return write_mimic(tmp_path_factory.mktemp("mimic") / "mimic3", "mimic-iii", n_patients=100, seed=1)


@pytest.fixture(scope="module")
def outcomes(mimic, env, tmp_path_factory):
    """(flags, DDP run folder)"""
    from test_clinical_recipes import FAST, tiny_bert

    root = tmp_path_factory.mktemp("outcomes")
    flags = [
        "--data_dir",
        str(mimic),
        "--model_name_or_path",
        str(tiny_bert(root / "enc")),
        *FAST,
        "--task",
        "mortality",
        "--max_length",
        "64",
        "--max_steps",
        "3",
    ]
    return flags, _run("clinical_outcomes.py", flags, env, root / "ddp", "ddp")


@pytest.mark.parametrize("setup", ["fsdp", ZERO3])
def test_clinical_outcomes_sharded_equals_ddp(setup, outcomes, env, tmp_path):
    flags, ddp = outcomes
    run = _run("clinical_outcomes.py", flags, env, tmp_path / setup, setup)
    _assert_trained_like_ddp(ddp, run, setup)
    _assert_same_weights(ddp, run)  # calibration (prior shift, temperature) folded in after the gather
    _assert_same_predictions(ddp, run, "score_")


@needs_deepspeed
def test_clinical_pretraining_zero3_equals_ddp(mimic, env, tmp_path):
    """(Under FSDP2 this model is refused: see test_setups_that_cannot_shard_are_refused_before_training.)"""
    from test_clinical_recipes import tiny_bert

    flags = [
        "--data_dir",
        str(mimic),
        "--model_name_or_path",
        str(tiny_bert(tmp_path / "mlm", masked_lm=True)),
        "--max_length",
        "32",
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "0.003",
        "--eval_windows",
        "32",
        "--n_bootstrap",
        "20",
        "--save_strategy",
        "no",
    ]
    ddp = _run("clinical_pretraining.py", flags, env, tmp_path / "ddp", "ddp")
    run = _run("clinical_pretraining.py", flags, env, tmp_path / "zero3", "zero3")
    _assert_trained_like_ddp(ddp, run, "zero3")
    _assert_same_weights(ddp, run)
    a, b = (json.loads((out / "metrics.json").read_text()) for out in (ddp, run))
    assert b["perplexity"] == pytest.approx(a["perplexity"], rel=1e-4)
    assert b["perplexity_before"] == a["perplexity_before"]


# -- medqa_lora ----------------------------------------------------------------------------------------------------


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


def _qa_flags(llama) -> list[str]:
    model, questions = llama
    return [
        "--model_name_or_path",
        str(model),
        "--data_dir",
        str(questions),
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "0.01",
        "--warmup_steps",
        "0",
        "--n_bootstrap",
        "20",
        "--min_group_size",
        "2",
        "--generate_max_new_tokens",
        "4",
        "--safety_max_new_tokens",
        "0",
        "--position_bias_rotations",
        "0",
    ]


@pytest.fixture(scope="module")
def medqa_ddp(llama, env, tmp_path_factory):
    return _run(
        "medqa_lora.py",
        [*_qa_flags(llama), "--max_steps", "2"],
        env,
        tmp_path_factory.mktemp("qa_runs") / "ddp",
        "ddp",
    )


@pytest.mark.parametrize("setup", ["fsdp", ZERO3])
def test_medqa_lora_sharded_equals_ddp(setup, llama, medqa_ddp, env, tmp_path):
    run = _run("medqa_lora.py", [*_qa_flags(llama), "--max_steps", "2"], env, tmp_path / setup, setup)
    # 11 training questions: the distributed sampler pads the epoch to 12 by repeating one, in every setup
    _assert_trained_like_ddp(medqa_ddp, run, setup, disjoint=False)
    adapter = _assert_same_weights(medqa_ddp, run, "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)  # the adapter alone, not the base weights
    _assert_same_predictions(medqa_ddp, run, "score_")


# -- resume --------------------------------------------------------------------------------------------------------


def _resume_matches_uninterrupted(
    script: str, args: list[str], env, tmp_path, setup: str, weights: str, keep: str
) -> dict:
    """Run to the end with checkpoints; then delete everything after `keep` and resume with `last` in the same
    folder. Returns the resumed run's metrics; asserts it saved the weights the uninterrupted run saved."""
    out = _run(script, args, env, tmp_path / "run", setup)
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) >= 2
    for ckpt in checkpoints:
        assert list(ckpt.glob("*.safetensors"))  # the gathered weights
        if setup == "fsdp":  # and no pickled copy of them to resume from (DeepSpeed resumes from its own files)
            assert not list(ckpt.glob("pytorch_model*")), sorted(p.name for p in ckpt.iterdir())
    final = load_file(out / weights)
    for path in out.iterdir():
        if path.name != keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    _run(script, [*args, "--resume_from_checkpoint", "last"], env, out, setup)
    resumed = load_file(out / weights)
    assert sorted(resumed) == sorted(final)
    for k in final:
        torch.testing.assert_close(resumed[k], final[k], atol=1e-5, rtol=1e-5, msg=k)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("setup", ["fsdp", ZERO3])
def test_sharded_lesion_run_resumes_and_loads_its_best_checkpoint(setup, ham, env, tmp_path):
    m = _resume_matches_uninterrupted(
        "lesion_classification.py",
        [
            "--data_dir",
            str(ham),
            "--max_steps",
            "4",
            "--image_size",
            "32",
            "--from_scratch",
            "true",
            "--per_device_train_batch_size",
            "4",
            "--n_bootstrap",
            "20",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
            "--load_best_model_at_end",
            "true",
            "--save_total_limit",
            "5",
        ],
        env,
        tmp_path,
        setup,
        "model.safetensors",
        keep="checkpoint-2",
    )
    assert m["training"]["resumed_from"].endswith("checkpoint-2") and m["training"]["global_step"] == 4
    assert m["training"]["best_checkpoint"]  # the best of checkpoint-2/-4 was reloaded into the shards at the end


def test_fsdp_lora_run_resumes(llama, env, tmp_path):
    m = _resume_matches_uninterrupted(
        "medqa_lora.py",
        [
            *_qa_flags(llama),
            "--max_steps",
            "3",
            "--save_strategy",
            "steps",
            "--save_steps",
            "1",
            "--save_total_limit",
            "5",
        ],
        env,
        tmp_path,
        "fsdp",
        "adapter_model.safetensors",
        keep="checkpoint-2",
    )
    assert m["training"]["resumed_from"].endswith("checkpoint-2") and m["training"]["global_step"] == 3


# -- refusals ------------------------------------------------------------------------------------------------------


def test_setups_that_cannot_shard_are_refused_before_training(mimic, env, tmp_path):
    from test_clinical_recipes import FAST, tiny_bert

    from hf_medai.data.synthetic.lesions import write_ham10000

    # BERT's masked-LM head registers its output bias twice (accelerate's FSDP2 groups would split it)
    mlm = _launch(
        "clinical_pretraining.py",
        [
            "--data_dir",
            str(mimic),
            "--model_name_or_path",
            str(tiny_bert(tmp_path / "mlm", masked_lm=True)),
            "--max_length",
            "32",
            "--max_steps",
            "2",
            "--eval_windows",
            "16",
            "--n_bootstrap",
            "10",
            "--output_dir",
            str(tmp_path / "mlm_run"),
        ],
        env,
        tmp_path,
        "fsdp",
    )
    assert (
        mlm.returncode != 0
        and "FSDP2 cannot shard BertForMaskedLM: its parameter 'cls.predictions.bias'" in mlm.stderr
    )
    assert not list((tmp_path / "mlm_run").glob("checkpoint-*"))

    multi = _launch(
        "clinical_outcomes.py",
        [
            "--data_dir",
            str(mimic),
            "--model_name_or_path",
            str(tiny_bert(tmp_path / "enc")),
            *FAST,
            "--task",
            "mortality,readmission",
            "--max_length",
            "64",
            "--max_steps",
            "2",
            "--output_dir",
            str(tmp_path / "multi"),
        ],
        env,
        tmp_path,
        "fsdp",
    )
    assert multi.returncode != 0 and "cannot be trained with FSDP or DeepSpeed ZeRO-3" in multi.stderr
    assert not list((tmp_path / "multi").glob("checkpoint-*")) and not (tmp_path / "multi" / "metrics.json").exists()

    ham = write_ham10000(tmp_path / "ham", n=40, seed=1)
    diffusion = _launch(
        "image_diffusion.py",
        ["--data_dir", str(ham), "--output_dir", str(tmp_path / "diff"), "--resolution", "16", "--max_steps", "1"],
        env,
        tmp_path,
        "fsdp",
    )
    assert diffusion.returncode != 0 and "runs one process or data-parallel (DDP) only" in diffusion.stderr


@needs_deepspeed
@pytest.mark.parametrize("init_flag", ["false", "true"])
def test_zero3_models_load_whole_and_zero3_init_is_refused(init_flag, monkeypatch, tmp_path):
    """Under a ZeRO-3 launch transformers would build every model partitioned (deepspeed.zero.Init) whatever
    zero3_init_flag says; the recipes load models on the main process alone, which would hang. `false` is honoured,
    `true` is refused."""
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    from hf_medai.config import ConfigError, parse_args

    for key, value in {
        "ACCELERATE_USE_DEEPSPEED": "true",
        "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
        "ACCELERATE_DEEPSPEED_ZERO3_INIT": init_flag,
    }.items():
        monkeypatch.setenv(key, value)
    try:
        if init_flag == "true":
            with pytest.raises(ConfigError, match="zero3_init_flag: true is not supported"):
                parse_args(TrainingArguments, args=["--output_dir", str(tmp_path), "--report_to", "none"])
        else:
            (args,) = parse_args(TrainingArguments, args=["--output_dir", str(tmp_path), "--report_to", "none"])
            assert args.deepspeed_plugin.zero_stage == 3 and not args.deepspeed_plugin.zero3_init_flag
            assert not is_deepspeed_zero3_enabled()  # from_pretrained builds whole models
    finally:
        unset_hf_deepspeed_config()
