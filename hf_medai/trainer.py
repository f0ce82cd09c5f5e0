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

Test hook: with HF_MEDAI_RECORD_TRAINING_DATA=1 each process records which training examples it loaded and the hash
of its final weights (hf_medai/throughput.py, `write_training_record`).
"""

from __future__ import annotations

import os

from transformers import PreTrainedModel, Trainer

from hf_medai.throughput import IndexRecordingDataset, record_requested, write_training_record


class MedTrainer(Trainer):
    # The recipes save the final model with `save_pretrained` on the main process alone, which needs the full weights
    # there: true under DDP and DeepSpeed ZeRO-1/2, not under FSDP or ZeRO-3 (each process holds a shard). A script
    # that saves with `trainer.save_model()` on every process may set this to True.
    allow_sharded_weights: bool = False
    _seen_indices: list[int] | None = None

    def _refuse_sharded_weights(self) -> None:
        if self.allow_sharded_weights:
            return
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None) if self.is_deepspeed_enabled else None
        if self.is_fsdp_enabled or (plugin is not None and plugin.zero_stage == 3):
            raise SystemExit("hf-medai recipes save the final model from the main process, which needs the full weights "
                             "on it: FSDP and DeepSpeed ZeRO-3 shard them. Launch with recipes/accelerate/multi_gpu.yaml "
                             "(DDP) or deepspeed_zero2.yaml instead.")

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        # Every process's files are on disk before the main process writes trainer_state.json, the completion mark.
        self.accelerator.wait_for_everyone()

    def get_train_dataloader(self):
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

    def train(self, *args, **kwargs):
        self._refuse_sharded_weights()
        output = super().train(*args, **kwargs)
        if record_requested():
            write_training_record(self.args.output_dir, self.args.process_index, self.args.world_size,
                                  list(self._seen_indices or []), self.model)
        return output

    def _reload_exactly(self, checkpoint_dir: str, model) -> None:
        loaded = type(model).from_pretrained(checkpoint_dir, config=model.config, use_safetensors=True,
                                             trust_remote_code=False)
        model.load_state_dict(loaded.state_dict(), strict=True)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = model if model is not None else self.model
        if isinstance(target, PreTrainedModel) and not hasattr(target, "peft_config") and not self.is_fsdp_enabled \
                and os.path.isfile(os.path.join(resume_from_checkpoint, "model.safetensors")):
            return self._reload_exactly(resume_from_checkpoint, target)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        target = self.model
        best = self.state.best_model_checkpoint
        if isinstance(target, PreTrainedModel) and not hasattr(target, "peft_config") and not self.is_fsdp_enabled \
                and best and os.path.isfile(os.path.join(best, "model.safetensors")):
            return self._reload_exactly(best, target)
        return super()._load_best_model()
