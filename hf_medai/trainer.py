"""`Trainer`, with checkpoints reloaded through `from_pretrained`.

transformers 5 renames some models' weights on load (ViT's `encoder.layer.N.attention.attention.query`
became `layers.N.attention.q_proj`) and saves them back in the old layout. `Trainer` reloads a
checkpoint, for `--resume_from_checkpoint` and for `load_best_model_at_end`, with a raw non-strict
`load_state_dict` that skips that conversion: every renamed weight is silently left as it was
(checked on transformers 5.24: a resumed ViT kept its fresh weights, the "best" model was the last one).
Here both go through `from_pretrained`, which converts, and are loaded strictly, so a mismatch is an
error instead of a warning.
"""

from __future__ import annotations

import os

from transformers import PreTrainedModel, Trainer


class MedTrainer(Trainer):
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
