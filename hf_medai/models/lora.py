"""A causal LM with a LoRA adapter (or 4-bit QLoRA on a CUDA GPU): load the base, add the adapter, batch the
examples, merge the adapter back. What recipes/medqa_lora.py trains; any causal LM with a chat template fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

from hf_medai.io import save_pretrained_atomic
from hf_medai.models.causal_lm import default_dtype, ensure_pad_token

Batching = Literal["auto", "packing", "length_grouped"]


def load_base_model(path, load_in_4bit: bool = False, attn_implementation: str | None = None):
    """(model, tokenizer): full precision (bf16 on GPUs, fp32 on CPU), or 4-bit NF4 for QLoRA."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(dtype=default_dtype(), use_safetensors=True, trust_remote_code=False)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=default_dtype(),
        )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


def add_lora(
    model,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: Sequence[str],
    load_in_4bit: bool = False,
    gradient_checkpointing: bool = False,
):
    """Wrap `model` in a peft LoRA adapter; only the adapter trains. `target_modules=["all-linear"]`: every linear
    layer except the output head."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.enable_input_require_grads()
    targets = "all-linear" if list(target_modules) == ["all-linear"] else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def adapter_facts(model, load_in_4bit: bool, merged: bool) -> dict:
    """metrics.json["adapter"]: the LoRA settings as peft resolved them, and the trainable share of the weights."""
    peft_config = model.peft_config["default"]
    return {
        "r": peft_config.r,
        "lora_alpha": peft_config.lora_alpha,
        "lora_dropout": peft_config.lora_dropout,
        # peft resolves "all-linear" to full module paths; the card lists the layer kinds
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in peft_config.target_modules}),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "load_in_4bit": load_in_4bit,
        "merged": merged,
    }


def _flash(model) -> bool:
    return model is not None and str(model.config._attn_implementation).startswith("flash_attention")


def resolve_batching(batching: Batching, model) -> str:
    # Packing only pays with varlen attention kernels: with sdpa/eager the packed row gets one dense
    # block-diagonal mask, and on our CPUs a packed batch trained slower than a length-grouped padded one.
    if batching != "auto":
        return batching
    return "packing" if _flash(model) else "length_grouped"


def make_collator(batching: str, tokenizer, model=None):
    """packing: the batch becomes one row with restarting position ids (padding-free; with flash attention also
    its varlen boundaries); length_grouped: dynamic padding (labels -100), similar lengths from
    `train_sampling_strategy="group_by_length"`."""
    if batching == "packing":
        return DataCollatorWithFlattening(return_flash_attn_kwargs=_flash(model))
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def merge_adapter(out: str | Path, base_path, attn_implementation: str | None = None) -> None:
    """Reload the base in full precision (even after 4-bit training), apply the adapter saved in `out`, merge, and
    save the merged model and tokenizer to `out`/merged."""
    from peft import PeftModel

    base, tokenizer = load_base_model(base_path, attn_implementation=attn_implementation)
    merged = PeftModel.from_pretrained(base, out).merge_and_unload()
    merged.config.use_cache = True
    save_pretrained_atomic(merged, f"{out}/merged")
    save_pretrained_atomic(tokenizer, f"{out}/merged")
