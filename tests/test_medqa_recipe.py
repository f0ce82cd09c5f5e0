"""End to end: the MedQA LoRA recipe with a tiny random Llama on a few sample questions, then the run folder's
promises (the adapter and the merged weights reload with plain HF code and give the recipe's numbers)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import load_recipe
from hf_medai.errors import SetupError

recipe = load_recipe("medqa_lora")

N_QUESTIONS = 16
TINY = [
    "--n_bootstrap",
    "50",
    "--min_group_size",
    "2",
    "--generate_max_new_tokens",
    "4",
    "--safety_max_new_tokens",
    "6",
    "--learning_rate",
    "0.01",
    "--logging_steps",
    "1",
]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny random Llama saved as a folder: the path users take with a hub id or their own checkpoint."""
    from hf_medai.models.causal_lm import tiny_llama

    folder = tmp_path_factory.mktemp("tiny") / "base"
    model, tokenizer = tiny_llama(seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    from hf_medai.data.medqa import sample_path

    path = tmp_path_factory.mktemp("qa") / "medqa_subset.jsonl"
    path.write_text("\n".join(sample_path("medqa").read_text().splitlines()[:N_QUESTIONS]) + "\n")
    return path


@pytest.fixture(scope="module")
def run(tiny_base, questions, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "medqa"
    recipe.main(
        [
            "--model_name_or_path",
            str(tiny_base),
            "--data_dir",
            str(questions),
            "--output_dir",
            str(out),
            "--max_steps",
            "6",
            "--merge",
            "true",
            "--batching",
            "packing",
            *TINY,
        ]
    )
    return out


def _test_examples(run, questions):
    from hf_medai.data.medqa import load_qa

    pred = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    ds, _ = load_qa(questions)
    by_id = {ex["id"]: ex for ex in ds}
    return pred, [by_id[i] for i in pred["id"]]


def test_run_folder_follows_the_contract(run):
    for name in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "metrics.json",
        "predictions.csv",
        "run_config.yaml",
        "merged/model.safetensors",
        "merged/config.json",
        "merged/tokenizer.json",
    ]:
        assert (run / name).is_file(), name
    assert not list(run.glob("*.bin")) and not list((run / "merged").glob("*.bin")), "weights: safetensors only"
    m = json.loads((run / "metrics.json").read_text())
    for key in [
        "accuracy_loglik",
        "accuracy_loglik_ci_low",
        "accuracy_loglik_ci_high",
        "accuracy_generate",
        "base_accuracy_loglik",
        "base_accuracy_generate",
        "accuracy_loglik_difference",
        "ece",
        "base_ece",
        "position_bias_accuracy_mean",
        "position_bias_consistency",
        "base_position_bias_consistency",
        "contamination_n_flagged",
        "safety_pass_rate",
        "base_safety_pass_rate",
        "per_subject",
    ]:
        assert key in m, key
    assert m["accuracy_loglik_ci_low"] <= m["accuracy_loglik"] <= m["accuracy_loglik_ci_high"]
    assert m["position_bias_n_orders"] == 5  # the original order and 4 rotations of 5 options
    assert m["safety_n"] == 13 and len(m["safety"]["tuned"]["probes"]) == 13
    assert m["throughput"]["train_tokens_per_second"] > 0 and m["throughput"]["peak_rss_mb"] > 0
    assert m["throughput"]["batching"] == "packing"
    assert m["training"]["global_step"] == 6
    assert m["data_report"]["rows_read"] == N_QUESTIONS
    assert m["n"] + m["n_train"] == N_QUESTIONS
    assert m["adapter"]["target_modules"] == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    pred = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    assert list(pred.columns[:7]) == [
        "id",
        "subject",
        "gold",
        "pred_loglik",
        "pred_generate",
        "base_pred_loglik",
        "base_pred_generate",
    ]
    assert {f"score_{L}" for L in "ABCDE"} <= set(pred.columns) and len(pred) == m["n"]
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 16


def test_metrics_and_card_equal_a_recomputation_from_predictions(run):
    from huggingface_hub import ModelCard

    from hf_medai.cards import fmt
    from hf_medai.evaluation import expected_calibration_error

    m = json.loads((run / "metrics.json").read_text())
    pred = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    scores = pred[[f"score_{L}" for L in "ABCDE"]].to_numpy()
    assert (pred["pred_loglik"] == np.array(list("ABCDE"))[scores.argmax(1)]).all()
    recomputed = {
        "accuracy_loglik": (pred["pred_loglik"] == pred["gold"]).mean(),
        "accuracy_generate": (pred["pred_generate"] == pred["gold"]).mean(),  # an unparsed reply ("") is wrong
        "base_accuracy_loglik": (pred["base_pred_loglik"] == pred["gold"]).mean(),
        "base_accuracy_generate": (pred["base_pred_generate"] == pred["gold"]).mean(),
    }
    for key, value in recomputed.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    assert m["accuracy_loglik_difference"] == pytest.approx(
        recomputed["accuracy_loglik"] - recomputed["base_accuracy_loglik"]
    )
    gold = pred["gold"].map("ABCDE".index).to_numpy()
    probs = pred[[f"prob_{L}" for L in "ABCDE"]].to_numpy()
    assert m["ece"] == pytest.approx(expected_calibration_error(gold, probs), abs=1e-9)

    card = ModelCard.load(run / "README.md")
    assert card.data.library_name == "peft"
    assert card.data.to_dict()["model-index"][0]["results"]
    text = card.text
    row = (
        f"| Accuracy, option log-likelihood | {fmt(m['accuracy_loglik'])} ({fmt(m['accuracy_loglik_ci_low'])}–"
        f"{fmt(m['accuracy_loglik_ci_high'])}) | {fmt(m['base_accuracy_loglik'])} ({fmt(m['base_accuracy_loglik_ci_low'])}–"
    )
    assert row in text
    for section in [
        "## Intended use",
        "## Out-of-scope use",
        "## Training data",
        "## Evaluation",
        "### Position bias",
        "### Calibration",
        "### Per-subject accuracy",
        "### Contamination check",
        "## Safety probes",
        "## Bias, risks and limitations",
        "## How to use",
        "## Training details",
    ]:
        assert section in text, section
    assert "Not for patient use" in text and "Hallucination" in text and "Limits of this check" in text


def test_adapter_reloads_with_peft_and_reproduces_the_scores(run, questions):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from hf_medai.evaluation.qa_scoring import option_logliks

    pred, examples = _test_examples(run, questions)
    model = AutoPeftModelForCausalLM.from_pretrained(run, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(run)
    scores = option_logliks(model, tokenizer, examples, batch_size=1)
    np.testing.assert_allclose(scores, pred[[f"score_{L}" for L in "ABCDE"]].to_numpy(), atol=1e-4)
    with model.disable_adapter():
        base = option_logliks(model, tokenizer, examples, batch_size=1)
    np.testing.assert_allclose(base, pred[[f"base_score_{L}" for L in "ABCDE"]].to_numpy(), atol=1e-4)


def test_merged_folder_loads_with_transformers_and_matches_the_adapter(run, questions):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_medai.data.medqa import prompt_token_ids

    _, examples = _test_examples(run, questions)
    merged = AutoModelForCausalLM.from_pretrained(run / "merged").eval()
    adapter = AutoPeftModelForCausalLM.from_pretrained(run, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    ids = torch.tensor([prompt_token_ids(examples[0], tokenizer)])
    with torch.no_grad():
        np.testing.assert_allclose(merged(ids).logits.numpy(), adapter(ids).logits.numpy(), atol=1e-4)
        with adapter.disable_adapter():  # and the adapter really does something
            assert not np.allclose(merged(ids).logits.numpy(), adapter(ids).logits.numpy(), atol=1e-6)


def _gold_probabilities(model, tokenizer, examples):
    """Option probabilities by hand: one unpadded forward of each chat prompt, the next-token log-probabilities of the
    option letters, softmax over them (the recipe's scoring, without its batching)."""
    from hf_medai.data.medqa import prompt_token_ids
    from hf_medai.evaluation.qa_scoring import continuation_token_ids

    probs = []
    with torch.no_grad():
        for ex in examples:
            letters = continuation_token_ids(ex, tokenizer)[1]
            assert all(len(ids) == 1 for ids in letters)
            logits = model(torch.tensor([prompt_token_ids(ex, tokenizer)])).logits[0, -1]
            probs.append(torch.softmax(torch.log_softmax(logits, -1)[[ids[0] for ids in letters]], -1).numpy())
    return np.asarray(probs, dtype=np.float64)


def test_robustness_block_and_card_section(run):
    m = json.loads((run / "metrics.json").read_text())
    sec = m["robustness"]["qa_stability"]
    assert sec["n_questions"] == m["n"] and sec["n_rotations"] == 4
    assert set(sec["rows"]) >= {"question_first", "age_after_noun", "rotation_1", "rotation_4"}
    assert sec["paraphrases_applied"]["question_first"] == m["n"]  # every sample stem ends in a question
    for key, row in sec["rows"].items():
        assert row["metric"] == "accuracy" and key in sec["verdicts"]
    # rotation rows agree with the position-bias report of the same scores
    assert sec["rows"]["rotation_1"]["metric_before"] == pytest.approx(m["position_bias_accuracy_original"])
    rotated = [sec["rows"][f"rotation_{r}"]["metric_after"] for r in range(1, 5)]
    assert min(rotated + [m["accuracy_loglik"]]) == pytest.approx(m["position_bias_accuracy_min"])
    assert 0 <= m["timing"]["audit_seconds"] <= m["timing"]["total_seconds"]
    text = (run / "README.md").read_text()
    assert "### Answer stability: paraphrased questions and reordered options" in text
    for line in sec["verdicts"].values():
        assert line in text
    assert "Largest changes:" in text and sec["examples"][0]["after"] in text


def test_a_stability_row_recomputed_from_the_reloaded_adapter(run, questions):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from hf_medai.evaluation.qa import rotate_options
    from hf_medai.evaluation.qa_paraphrase import question_first

    rows = json.loads((run / "metrics.json").read_text())["robustness"]["qa_stability"]["rows"]
    _, examples = _test_examples(run, questions)
    model = AutoPeftModelForCausalLM.from_pretrained(run, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    gold = np.array([ex["answer_index"] for ex in examples])
    n = np.arange(len(examples))
    before = _gold_probabilities(model, tokenizer, examples)

    # paraphrase: the final question asked first
    after = _gold_probabilities(
        model, tokenizer, [{**ex, "question": question_first(ex["question"])} for ex in examples]
    )
    change = after[n, gold] - before[n, gold]
    row = rows["question_first"]
    assert row["n"] == len(examples)
    assert row["mean_change"] == pytest.approx(change.mean(), abs=1e-6)
    assert row["mean_abs_change"] == pytest.approx(np.abs(change).mean(), abs=1e-6)
    assert row["n_flipped"] == int((before.argmax(1) != after.argmax(1)).sum())
    assert row["metric_before"] == pytest.approx(np.mean(before.argmax(1) == gold))
    assert row["metric_after"] == pytest.approx(np.mean(after.argmax(1) == gold))

    # option order: every option moved down one place (the gold answer's new position is its rotated index)
    shifted = [rotate_options(ex, 1) for ex in examples]
    after = _gold_probabilities(model, tokenizer, shifted)
    new_gold = np.array([ex["answer_index"] for ex in shifted])
    change = after[n, new_gold] - before[n, gold]
    chosen_text = [ex["options"][i] for ex, i in zip(shifted, after.argmax(1))]
    row = rows["rotation_1"]
    assert row["mean_abs_change"] == pytest.approx(np.abs(change).mean(), abs=1e-6)
    assert row["n_flipped"] == sum(t != ex["options"][i] for t, ex, i in zip(chosen_text, examples, before.argmax(1)))
    assert row["metric_after"] == pytest.approx(np.mean(after.argmax(1) == new_gold))


def test_hf_medai_audit_reproduces_the_robustness_block(run, tmp_path):
    import shutil

    from hf_medai.cli import main as cli

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    expected = metrics.pop("robustness")
    (copy / "metrics.json").write_text(json.dumps(metrics))
    assert cli(["audit", str(copy)]) == 0
    got = json.loads((copy / "metrics.json").read_text())["robustness"]
    assert got.keys() == expected.keys()
    assert _approx_equal(got, expected)
    assert "### Answer stability" in (copy / "README.md").read_text()


def _approx_equal(a, b, tol=1e-6) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_approx_equal(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_approx_equal(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= tol
    return a == b


def test_lora_weights_change_base_weights_do_not_and_loss_falls(tiny_base, questions, tmp_path):
    from transformers import TrainerCallback

    class Snapshot(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
            self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

        def on_train_end(self, args, state, control, model=None, **kw):
            self.after = {n: p.detach().clone() for n, p in model.named_parameters()}

    snap = Snapshot()
    out = tmp_path / "run"
    recipe.main(
        [
            "--model_name_or_path",
            str(tiny_base),
            "--data_dir",
            str(questions),
            "--output_dir",
            str(out),
            "--max_steps",
            "12",
            "--per_device_train_batch_size",
            "8",
            "--lr_scheduler_type",
            "constant",
            "--batching",
            "length_grouped",
            "--position_bias_rotations",
            "0",
            "--safety_max_new_tokens",
            "0",
            *TINY,
        ],
        callbacks=[snap],
    )
    assert snap.trainable and all("lora_" in n for n in snap.trainable)
    unchanged = [n for n in snap.trainable if torch.equal(snap.before[n], snap.after[n])]
    assert not unchanged, unchanged
    changed_base = [
        n for n in snap.before if n not in snap.trainable and not torch.equal(snap.before[n], snap.after[n])
    ]
    assert not changed_base, changed_base
    import yaml

    assert yaml.safe_load((out / "run_config.yaml").read_text())["train_sampling_strategy"] == "group_by_length"
    loss = json.loads((out / "metrics.json").read_text())["training"]["loss_curve"]
    assert len(loss) == 12
    assert np.mean(loss[-3:]) < np.mean(loss[:3])


def test_packed_batches_give_the_loss_of_padded_ones(tiny_base, questions):
    """Padding-free packing must not let an example attend to the one packed before it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_medai.data.medqa import load_qa, tokenize_dataset

    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model.config.use_cache = False  # what the recipe sets before training
    rows = tokenize_dataset(load_qa(questions)[0].select(range(3)), tokenizer, 2048).remove_columns(["id"])
    features = [rows[i] for i in range(3)]
    packed = recipe.make_collator("packing", tokenizer, model)(features)
    padded = recipe.make_collator("length_grouped", tokenizer, model)(features)
    assert packed["input_ids"].shape[0] == 1 and padded["input_ids"].shape[0] == 3
    with torch.no_grad():
        per_example = []
        for f in features:  # each example alone: the ground truth
            labels = torch.tensor([f["labels"]])
            loss = model(input_ids=torch.tensor([f["input_ids"]]), labels=labels).loss
            per_example.append((loss * (labels[:, 1:] != -100).sum(), (labels[:, 1:] != -100).sum()))
        truth = sum(s for s, _ in per_example) / sum(n for _, n in per_example)
        assert model(**packed).loss.item() == pytest.approx(truth.item(), abs=1e-5)
        assert model(**padded).loss.item() == pytest.approx(truth.item(), abs=1e-5)


def test_existing_run_folder_is_not_overwritten(run, tiny_base, questions):
    from hf_medai.run_folder import RunFolderExists

    with pytest.raises(RunFolderExists, match="already holds a run"):
        recipe.main(
            [
                "--model_name_or_path",
                str(tiny_base),
                "--data_dir",
                str(questions),
                "--output_dir",
                str(run),
                "--max_steps",
                "1",
                *TINY,
            ]
        )


def test_interrupted_run_resumes_to_the_same_total_steps(tiny_base, questions, tmp_path):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise RuntimeError("simulated crash")

    out = tmp_path / "run"
    flags = [
        "--model_name_or_path",
        str(tiny_base),
        "--data_dir",
        str(questions),
        "--output_dir",
        str(out),
        "--max_steps",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--position_bias_rotations",
        "0",
        *TINY,
        "--safety_max_new_tokens",
        "0",
    ]
    with pytest.raises(RuntimeError, match="simulated crash"):
        recipe.main(flags, callbacks=[Crash()])
    assert (out / "checkpoint-2" / "adapter_model.safetensors").is_file() and not (out / "metrics.json").exists()
    recipe.main([*flags, "--resume_from_checkpoint", "last"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["global_step"] == 4 and m["training"]["resumed_from"].endswith("checkpoint-2")
    assert m["throughput"]["optimizer_steps"] == 2  # only the steps this process ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without a GPU")
def test_qlora_without_a_gpu_says_why(tiny_base, tmp_path):
    with pytest.raises(SetupError, match="needs a CUDA GPU"):
        recipe.main(
            ["--model_name_or_path", str(tiny_base), "--output_dir", str(tmp_path / "q"), "--load_in_4bit", "true"]
        )
    assert not (tmp_path / "q").exists()


def test_config_errors_are_clear():
    from hf_medai.config import ConfigError

    with pytest.raises(ConfigError, match="batching"):
        recipe.main(["--batching", "packed"])
    with pytest.raises(ConfigError, match="loglik_style"):
        recipe.main(["--loglik_style", "text"])


@pytest.mark.slow
def test_offline_default_smollm2_short_run(tmp_path):
    """The README's offline default (SmolLM2-135M-Instruct), cut short: a couple of steps, a few questions."""
    pytest.importorskip("gguf")
    from hf_medai.models import causal_lm

    try:
        causal_lm.default_causal_lm_path()
    except RuntimeError as e:
        pytest.skip(str(e))
    out = tmp_path / "smol"
    recipe.main(
        [
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--max_eval_samples",
            "4",
            "--n_bootstrap",
            "20",
            "--position_bias_rotations",
            "1",
            "--safety_max_new_tokens",
            "16",
        ]
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["hub_base_model"] == causal_lm.SMOLLM2_BASE_MODEL and m["n"] == 4
    # A bare reload, no dtype argument, reproduces the recipe's option scores (the cached base is float32).
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from hf_medai.data.medqa import load_qa, sample_path
    from hf_medai.evaluation.qa_scoring import option_logliks

    pred = pd.read_csv(out / "predictions.csv")
    model = AutoPeftModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    by_id = {row["id"]: row for row in load_qa(sample_path("medqa"))[0]}
    logliks = option_logliks(model, tokenizer, [by_id[i] for i in pred["id"]], "letter", 8)
    columns = sorted(c for c in pred.columns if c.startswith("score_"))
    assert np.allclose(np.asarray(logliks)[:, : len(columns)], pred[columns].to_numpy(), atol=1e-3)
