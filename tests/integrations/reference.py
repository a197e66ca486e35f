"""Hand-written references shared by the framework tests."""

from __future__ import annotations

from typing import Any


def no_decay_groups(model: Any) -> list[dict[str, Any]]:
    """timm's ``filter_bias_and_bn`` groups, written here independently of optiplug: biases
    and 1-D (normalization) weights without weight decay, the rest with the optimizer's
    (optiplug's default for an optimizer built from a model)."""
    named = list(model.named_parameters())
    spared = [p for n, p in named if p.ndim <= 1 or n.endswith("bias")]
    decayed = [p for _, p in named if not any(p is q for q in spared)]
    return [{"params": decayed}, {"params": spared, "weight_decay": 0.0}]
