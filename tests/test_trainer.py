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


def test_meta_copy_keeps_structure_and_ties_without_weight_memory():
    """The copy `whole_model()` fills after sharded training: parameters on meta, shared ones still shared, buffers
    real; the full state dict loads into it strictly and gives the original's outputs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_medai.trainer import meta_copy

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=True,
        )
    ).eval()
    copy = meta_copy(model)
    assert all(p.device.type == "meta" for p in copy.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())  # the original is untouched
    assert copy.lm_head.weight is copy.model.embed_tokens.weight
    assert all(b.device.type == "cpu" for b in copy.buffers())
    copy.load_state_dict(model.state_dict(), strict=True, assign=True)
    copy.tie_weights()
    assert copy.lm_head.weight is copy.model.embed_tokens.weight
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(copy(ids).logits, model(ids).logits)
