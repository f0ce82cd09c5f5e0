"""`Trainer`, with checkpoints reloaded through `from_pretrained`.

transformers 5 renames some models' weights on load (ViT's `encoder.layer.N.attention.attention.query`
became `layers.N.attention.q_proj`) and saves them back in the old layout. `Trainer` reloads a
checkpoint, for `--resume_from_checkpoint` and for `load_best_model_at_end`, with a raw non-strict
`load_state_dict` that skips that conversion: every renamed weight is silently left as it was
(checked on transformers 5.24: a resumed ViT kept its fresh weights, the "best" model was the last one).
Here both go through `from_pretrained`, which converts, and are loaded strictly, so a mismatch is an
error instead of a warning.

Checkpoints: `Trainer` writes `checkpoint-N/` in place, and `trainer_state.json` is the last file the main process
writes there. MedTrainer adds a barrier before it, so every process has finished its own files (its RNG state; its
shards under FSDP/DeepSpeed) first: a `checkpoint-N` whose `trainer_state.json` parses is complete, and
`hf_medai.io.last_complete_checkpoint` (`--resume_from_checkpoint last`) takes only such folders.

Sharded training (FSDP, DeepSpeed ZeRO-3): each process holds a shard of the weights, so the recipes' main-process
work after training (evaluation, calibration folded into the head, `save_pretrained`) needs them whole. Before
training, MedTrainer keeps a copy of the model's structure on the meta device (no memory for the weights); after
training, `whole_model()`, called on every process, gathers the full weights (`accelerator.get_state_dict`, a
collective) and loads them into that copy, strictly, on the main process. Without sharding it is `trainer.model`.

Test hook: with HF_MEDAI_RECORD_TRAINING_DATA=1 each process records which training examples it loaded and the hash
of its final weights (hf_medai/throughput.py, `write_training_record`).
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer

from hf_medai.errors import SetupError
from hf_medai.throughput import IndexRecordingDataset, record_requested, write_training_record


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters live on the meta device (no memory); buffers are copied as they are.

    Shared parameters stay shared. Under DeepSpeed ZeRO-3 a partitioned parameter's full shape is `ds_shape`.
    """
    memo = {}
    for p in model.parameters():
        if id(p) not in memo:
            shape = getattr(p, "ds_shape", p.shape)
            memo[id(p)] = nn.Parameter(torch.empty(shape, dtype=p.dtype, device="meta"), requires_grad=p.requires_grad)
    return copy.deepcopy(model, memo)


class MedTrainer(Trainer):
    """`Trainer` plus: a training-only collator, exact checkpoint reloads, sharded-model gathering.

    `train_data_collator` (augmentation, random masking) is used for the training batches only; `data_collator`
    serves every evaluation, including the per-epoch validation that picks `load_best_model_at_end`'s checkpoint,
    so that choice is made on the same clean inputs the final scores use.
    """

    _seen_indices: list[int] | None = None
    _template: nn.Module | None = None

    def __init__(self, *args, train_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_data_collator = train_data_collator

    def get_train_dataloader(self):
        if self.train_data_collator is None:
            return self._train_dataloader()
        evaluation_collator, self.data_collator = self.data_collator, self.train_data_collator
        try:
            return self._train_dataloader()
        finally:
            self.data_collator = evaluation_collator

    @property
    def is_sharded(self) -> bool:
        """True when no process holds the whole model: FSDP, or DeepSpeed ZeRO stage 3."""
        if self.is_fsdp_enabled:
            return True
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None) if self.is_deepspeed_enabled else None
        return plugin is not None and plugin.zero_stage == 3

    def whole_model(self) -> nn.Module | None:
        """The trained model with all its weights, on the main process. Call it on EVERY process.

        Not sharded: `self.model` (every process has it whole). Sharded: the full state dict is gathered from all
        processes (a collective) and loaded strictly into the meta copy taken before training, on the main process,
        moved to its device; the other processes get None.
        """
        if not self.is_sharded:
            return self.model
        if self._template is None:
            raise RuntimeError("whole_model() after sharded training needs the copy train() takes: call train() first")
        state_dict = self.accelerator.get_state_dict(self.deepspeed if self.is_deepspeed_enabled else self.model)
        if self.is_deepspeed_enabled:
            # Training set transformers' global ZeRO-3 flag again: with it, loading a model partitions it and
            # `generate` waits for the other processes at every token. What follows runs on one process.
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            unset_hf_deepspeed_config()
        if not self.is_world_process_zero():
            return None
        model, self._template = self._template, None
        model.load_state_dict(state_dict, strict=True, assign=True)
        if isinstance(model, PreTrainedModel):
            model.tie_weights()  # assign=True gave tied names separate tensors
        return model.to(self.args.device).eval()

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        # Every process's files are on disk before the main process writes trainer_state.json, the completion mark.
        self.accelerator.wait_for_everyone()

    def _train_dataloader(self):
        if not record_requested():
            return super().get_train_dataloader()
        import datasets

        original = dataset = self.train_dataset
        if isinstance(dataset, datasets.Dataset):
            dataset = self._remove_unused_columns(dataset, description="training")
        self._seen_indices = []
        self.train_dataset = IndexRecordingDataset(dataset, self._seen_indices)
        try:
            loader = super().get_train_dataloader()
        finally:
            self.train_dataset = original
        self._seen_indices.clear()  # a sampler may read the dataset while it is built (lengths); that is not training
        return loader

    def _prepare_fsdp2(self) -> None:
        """Two things accelerate 1.15's FSDP2 sharding gets wrong, handled before it runs:

        - TRANSFORMER_BASED_WRAP shards each `_no_split_modules` class, then the input embeddings as a unit of their
          own; when they sit inside one of those classes (ViT's and BERT's `*Embeddings`), their weights are already
          sharded and `fully_shard` fails deep in DeviceMesh. So wrap only the block classes that do not contain the
          input embeddings (the transformer layers); the embeddings get their own unit.
        - The output embedding layer goes into a group with the input embeddings. A parameter of either that another
          module also registers (BERT's masked-LM head: `decoder.bias` is `cls.predictions.bias`) then sits in two
          groups, which PyTorch 2.13 refuses deep inside the first forward: say so before training instead.
        """
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        if plugin is None or plugin.fsdp_version != 2:
            return
        embed = getattr(self.model, "get_input_embeddings", lambda: None)()
        grouped = [m for m in (embed, getattr(self.model, "get_output_embeddings", lambda: None)()) if m is not None]
        ours = {id(p) for m in grouped for p in m.parameters()}
        inside = {id(sub) for m in grouped for sub in m.modules()}
        for name, module in self.model.named_modules():
            if id(module) in inside:
                continue
            for pname, p in module.named_parameters(recurse=False):
                if id(p) in ours:
                    raise SetupError(
                        f"FSDP2 cannot shard {type(self.model).__name__}: its parameter '{name}.{pname}' is also a "
                        "weight of the output or input embedding layer, which accelerate shards as a group of its "
                        "own (BERT-style masked-LM heads do this). Models of this kind fit one GPU: launch with "
                        "recipes/accelerate/multi_gpu.yaml (DDP), deepspeed_zero2.yaml or deepspeed_zero3.yaml."
                    )

        policy = getattr(plugin.auto_wrap_policy, "func", plugin.auto_wrap_policy)
        names = list(getattr(self.model, "_no_split_modules", None) or [])
        if (
            policy is transformer_auto_wrap_policy
            and plugin.transformer_cls_names_to_wrap is None
            and embed is not None
            and names
        ):
            around = {
                type(m).__name__
                for m in self.model.modules()
                if m is not embed and any(sub is embed for sub in m.modules())
            }
            plugin.transformer_cls_names_to_wrap = [n for n in names if n not in around]

    def train(self, *args, **kwargs):
        if self.is_sharded and self._template is None:
            self._prepare_fsdp2()
            self._template = meta_copy(self.model)  # before accelerate shards the model in place
        output = super().train(*args, **kwargs)
        if record_requested():
            write_training_record(
                self.args.output_dir,
                self.args.process_index,
                self.args.world_size,
                list(self._seen_indices or []),
                self.model,
            )
        return output

    def _reload_exactly(self, checkpoint_dir: str, model) -> None:
        loaded = type(model).from_pretrained(
            checkpoint_dir, config=model.config, use_safetensors=True, trust_remote_code=False
        )
        model.load_state_dict(loaded.state_dict(), strict=True)

    def _load_into_fsdp_shards(self, checkpoint_dir: str, model) -> None:
        """Load a checkpoint's safetensors weights into the FSDP-sharded model: every process reads the file whole
        (through `from_pretrained`, which converts transformers 5's renamed weights) and keeps its own shard."""
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        if hasattr(self.model, "peft_config"):  # the adapter alone; the frozen base is already in place
            # peft saves adapter weights without the adapter's name: lora_A.weight is lora_A.default.weight here
            in_model = {k.replace(".default.", "."): k for k in model.state_dict() if ".default." in k}
            weights = load_file(os.path.join(checkpoint_dir, "adapter_model.safetensors"))
            state_dict, strict = {in_model.get(k, k): v for k, v in weights.items()}, False
        else:
            template = self._template
            loaded = type(template).from_pretrained(
                checkpoint_dir, config=template.config, use_safetensors=True, trust_remote_code=False
            )
            state_dict, strict = loaded.state_dict(), True
        missing = set(state_dict) - set(model.state_dict())
        if missing:
            raise RuntimeError(f"{checkpoint_dir}: weights the model does not have: {sorted(missing)[:5]}")
        set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True, strict=strict))

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self.is_fsdp_enabled:
            return super()._save_optimizer_and_scheduler(output_dir)
        # Trainer would also write the model as a pickle (pytorch_model_fsdp.bin) to resume from; the weights are
        # already in the checkpoint's model.safetensors (save_model gathers them), which is what resume loads.
        from accelerate.utils import save_fsdp_optimizer
        from transformers.trainer import SCHEDULER_NAME

        save_fsdp_optimizer(
            self.accelerator.state.fsdp_plugin, self.accelerator, self.optimizer, self.model, output_dir
        )
        if self.args.should_save:
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = model if model is not None else self.model
        if self.is_fsdp_enabled:
            return self._load_into_fsdp_shards(resume_from_checkpoint, target)
        if (
            isinstance(target, PreTrainedModel)
            and not hasattr(target, "peft_config")
            and not self.is_sharded
            and os.path.isfile(os.path.join(resume_from_checkpoint, "model.safetensors"))
        ):
            return self._reload_exactly(resume_from_checkpoint, target)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        target = self.model
        best = self.state.best_model_checkpoint
        if self.is_fsdp_enabled and best:
            return self._load_into_fsdp_shards(best, target)
        if (
            isinstance(target, PreTrainedModel)
            and not hasattr(target, "peft_config")
            and not self.is_sharded
            and best
            and os.path.isfile(os.path.join(best, "model.safetensors"))
        ):
            return self._reload_exactly(best, target)
        return super()._load_best_model()
