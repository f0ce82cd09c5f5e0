"""MedTrainer reloads checkpoints exactly (transformers 5's Trainer skips the weight-name conversion)."""

import torch
from transformers import TrainingArguments

from hf_medai.models.vision import build_image_classifier
from hf_medai.trainer import MedTrainer


def test_resume_and_best_model_load_every_weight(tmp_path):
    saved, _ = build_image_classifier(None, ["a", "b"], 32)
    saved.save_pretrained(tmp_path / "checkpoint-1")
    fresh, _ = build_image_classifier(None, ["a", "b"], 32)
    assert not torch.equal(fresh.classifier.weight, saved.classifier.weight)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = MedTrainer(model=fresh, args=args)
    trainer._load_from_checkpoint(str(tmp_path / "checkpoint-1"))
    for (name, a), b in zip(saved.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name

    other, _ = build_image_classifier(None, ["a", "b"], 32)
    trainer = MedTrainer(model=other, args=args)
    trainer.state.best_model_checkpoint = str(tmp_path / "checkpoint-1")
    trainer._load_best_model()
    for (name, a), b in zip(saved.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
