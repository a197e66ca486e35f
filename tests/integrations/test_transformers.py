"""transformers.Trainer trains with an optiplug optimizer and scheduler built from one config."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import transformers  # noqa: E402

import optiplug  # noqa: E402
from optiplug.integrations.transformers import trainer_optimizers  # noqa: E402

from .reference import no_decay_groups  # noqa: E402

BATCH = 8
STEPS = 4
CONFIG = """\
optimizer: {name: adamw, lr: 5e-3, weight_decay: 0.01}
scheduler: {name: exponential, gamma: 0.5}
"""


def _model() -> transformers.PreTrainedModel:
    """A tiny BERT made from a config in code (no download), without dropout."""
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16, num_labels=2,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def _examples() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (BATCH, 6), generator=generator)
    labels = (ids.sum(dim=1) % 2).long()
    return [{"input_ids": ids[i], "attention_mask": torch.ones(6, dtype=torch.long),
             "labels": labels[i]} for i in range(BATCH)]


def _reference() -> tuple[torch.nn.Module, list[float]]:
    """The same training by hand: torch.optim.AdamW, ExponentialLR stepped per optimizer step,
    the whole (tiny) data set as each batch, so the sampler's order does not matter."""
    model = _model()
    model.train()
    optimizer = torch.optim.AdamW(no_decay_groups(model), lr=5e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
    batch = {key: torch.stack([e[key] for e in _examples()]) for key in _examples()[0]}
    lrs = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return model, lrs


def test_trainer_with_optiplug_optimizers_equals_a_hand_written_loop(tmp_path: Path):
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    model = _model()
    optimizer, scheduler = trainer_optimizers(config, model)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=STEPS, per_device_train_batch_size=BATCH,
        max_grad_norm=0.0, report_to=[], save_strategy="no", logging_strategy="no",
        use_cpu=True, disable_tqdm=True, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_examples(),
                                   optimizers=(optimizer, scheduler))
    trainer.train()
    # accelerate wraps the optimizer it is given
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is optimizer
    reference, lrs = _reference()
    assert scheduler.get_last_lr()[0] == pytest.approx(lrs[-1], rel=1e-15)
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(),
                                    strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)


def test_without_a_scheduler_section_the_trainer_makes_its_own():
    optimizer, scheduler = trainer_optimizers({"name": "adamw", "lr": 1e-3}, _model())
    assert isinstance(optimizer, torch.optim.AdamW) and scheduler is None


def test_a_scheduler_that_needs_a_metric_is_refused_with_the_reason():
    with pytest.raises(optiplug.ConfigError, match="steps on a metric"):
        trainer_optimizers({"optimizer": {"name": "adamw"},
                            "scheduler": {"name": "reduce_on_plateau"}}, _model())
