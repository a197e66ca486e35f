"""optiplug's torch optimizers in a user's own training script, next to ``torch.optim.AdamW``.

A small CNN trained by hand: param groups by role from ``named_parameters()``, a frozen layer
unfrozen later, a head added mid-training with ``add_param_group``, a checkpoint through
``torch.save``/``torch.load(weights_only=True)``, and the state loaded into plain
``torch.optim.AdamW``. Every step is compared with ``torch.optim.AdamW`` run side by side on a
copy of the model (float64). Then the kernel choice (``fused``/``foreach``) and what the torch
backend refuses, as the NumPy backend does.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import optiplug
from optiplug.backends.torch import Adam, RMSprop

RULES = [{"role": "norm", "weight_decay": 0.0}, {"role": "bias", "weight_decay": 0.0}]
LR, DECAY = 0.01, 0.1


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # No bias before BatchNorm (it would be cancelled; its gradient is rounding noise).
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4),
                                      nn.ReLU())
        self.classifier = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))  # type: ignore[no-any-return]


def _data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(8, 1, 6, 6, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, 3, (8,), generator=generator)


def _model() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().double()


def _reference_groups(model: nn.Module) -> list[dict[str, Any]]:
    """By hand, as a torch user writes it: no decay for BatchNorm weights and biases."""
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")
                or n == "features.1.weight"]
    decay = [p for n, p in model.named_parameters() if not any(p is q for q in no_decay)]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def _step(model: nn.Module, head: nn.Module | None, opt: Any, step: int) -> None:
    x, y = _data(step)
    opt.zero_grad(set_to_none=True)
    out = model(x)
    if head is not None:
        out = out + head(out)
    nn.functional.cross_entropy(out, y).backward()
    opt.step()


def _assert_same(mine: nn.Module, reference: nn.Module) -> None:
    for (name, a), (_, b) in zip(mine.named_parameters(), reference.named_parameters(),
                                 strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_hand_written_cnn_training_matches_adamw_through_freeze_head_and_checkpoint(
        tmp_path: Any) -> None:
    model, reference = _model(), _model()
    opt = optiplug.optimizer("adamw", model.named_parameters(), lr=LR, weight_decay=DECAY,
                             param_groups=RULES)
    ref_opt = torch.optim.AdamW(_reference_groups(reference), lr=LR, weight_decay=DECAY)
    # The norm rule found the BatchNorm weight in named_parameters() (no module given).
    no_decay = {n for g in opt.param_groups if g["weight_decay"] == 0.0
                for n in g["param_names"]}
    assert no_decay == {"features.1.weight", "features.1.bias", "classifier.bias"}
    # Freeze the convolution for three steps, then unfreeze: its first gradients come late.
    for net in (model, reference):
        net.features[0].requires_grad_(False)
    for step in range(3):
        _step(model, None, opt, step)
        _step(reference, None, ref_opt, step)
    for net in (model, reference):
        net.features[0].requires_grad_(True)
    for step in range(3, 6):
        _step(model, None, opt, step)
        _step(reference, None, ref_opt, step)
    _assert_same(model, reference)
    # A head added mid-training from .parameters(), as torch users write it.
    torch.manual_seed(1)
    head = nn.Linear(3, 3).double()
    ref_head = copy.deepcopy(head)
    opt.add_param_group({"params": head.parameters(), "lr": LR / 2})
    ref_opt.add_param_group({"params": ref_head.parameters(), "lr": LR / 2})
    for step in range(6, 9):
        _step(model, head, opt, step)
        _step(reference, ref_head, ref_opt, step)
    _assert_same(model, reference)
    _assert_same(head, ref_head)
    # A checkpoint through torch.save / torch.load(weights_only=True) into fresh objects.
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "head": head.state_dict(),
                "optimizer": opt.state_dict()}, path)
    checkpoint = torch.load(path, weights_only=True)
    model2, head2 = _model(), nn.Linear(3, 3).double()
    model2.load_state_dict(checkpoint["model"])
    head2.load_state_dict(checkpoint["head"])
    opt2 = optiplug.optimizer("adamw", model2.named_parameters(), lr=LR, weight_decay=DECAY,
                              param_groups=RULES)
    opt2.add_param_group({"params": head2.parameters(), "lr": LR / 2})
    opt2.load_state_dict(checkpoint["optimizer"])
    # The same state in plain torch.optim.AdamW, built the torch way: it keeps its own kernel.
    model3, head3 = _model(), nn.Linear(3, 3).double()
    model3.load_state_dict(checkpoint["model"])
    head3.load_state_dict(checkpoint["head"])
    plain = torch.optim.AdamW(_reference_groups(model3), lr=LR, weight_decay=DECAY)
    plain.add_param_group({"params": head3.parameters(), "lr": LR / 2})
    saved_kernels = [(g["fused"], g["foreach"]) for g in checkpoint["optimizer"]["param_groups"]]
    assert saved_kernels == [(None, None)] * 3  # what the user asked for, not optiplug's pick
    assert opt.param_groups[0]["fused"] is True  # ... which stays fused on the live optimizer
    # optiplug's groups hold the same parameters in the same order as the hand-made ones.
    plain.load_state_dict(checkpoint["optimizer"])
    assert [g["fused"] for g in plain.param_groups] == [None] * 3
    for step in range(9, 12):
        _step(model2, head2, opt2, step)
        _step(model3, head3, plain, step)
        _step(reference, ref_head, ref_opt, step)
    for mine in (model2, model3):
        _assert_same(mine, reference)
    _assert_same(head2, ref_head)
    _assert_same(head3, ref_head)


@pytest.mark.parametrize("form", ["module", "named_parameters", "dict"])
def test_dry_run_table_and_built_optimizer_agree_for_every_params_form(form: str) -> None:
    model = _model()
    params: Any = {"module": model, "named_parameters": model.named_parameters(),
                   "dict": dict(model.named_parameters())}[form]
    table = optiplug.param_groups(model, RULES, lr=LR, weight_decay=DECAY)
    opt = optiplug.optimizer("adamw", params, lr=LR, weight_decay=DECAY, param_groups=RULES)
    built = {name: group["weight_decay"] for group in opt.param_groups
             for name in group["param_names"]}
    assert built == {row.name: row.weight_decay for row in table.rows}
    assert built["features.1.weight"] == 0.0 and built["features.0.weight"] == DECAY


def test_param_groups_result_is_accepted_as_it_is() -> None:
    model, reference = _model(), _model()
    groups = optiplug.param_groups(model, RULES, lr=LR, weight_decay=DECAY)
    opt = optiplug.optimizer("adamw", groups, lr=LR, weight_decay=DECAY)
    ref_opt = torch.optim.AdamW(_reference_groups(reference), lr=LR, weight_decay=DECAY)
    for step in range(3):
        _step(model, None, opt, step)
        _step(reference, None, ref_opt, step)
    _assert_same(model, reference)


def _tensors() -> list[nn.Parameter]:
    return [nn.Parameter(torch.ones(3, dtype=torch.float64)) for _ in range(2)]


@pytest.mark.parametrize(("kernel", "fused", "foreach"), [
    ({}, True, None), ({"fused": False}, False, None), ({"foreach": True}, None, True),
    ({"fused": False, "foreach": False}, False, False), ({"fused": True}, True, None)])
def test_fused_and_foreach_spec_keys_reach_torch_and_steps_match(
        kernel: dict[str, bool], fused: bool | None, foreach: bool | None) -> None:
    params, reference = _tensors(), _tensors()
    opt = optiplug.optimizer("adam", params, lr=0.1, **kernel)
    assert (opt.param_groups[0]["fused"], opt.param_groups[0]["foreach"]) == (fused, foreach)
    saved = opt.state_dict()["param_groups"][0]
    assert (saved["fused"], saved["foreach"]) == (kernel.get("fused"), kernel.get("foreach"))
    ref_opt = torch.optim.Adam(reference, lr=0.1, foreach=False)
    for step in range(3):
        for p, q in zip(params, reference, strict=True):
            p.grad = torch.full((3,), float(step + 1), dtype=torch.float64)
            q.grad = p.grad.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(params, reference, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_kernel_choices_that_cannot_be_honoured_are_config_errors() -> None:
    with pytest.raises(optiplug.ConfigError, match="fused and foreach cannot both be true"):
        optiplug.optimizer("adam", _tensors(), fused=True, foreach=True)
    with pytest.raises(optiplug.ConfigError, match="fused: unknown key"):
        optiplug.optimizer("rmsprop", _tensors(), fused=True)
    with pytest.raises(optiplug.ConfigError, match="no fused RMSprop kernel"):
        RMSprop(_tensors(), fused=True)
    with pytest.raises(optiplug.ConfigError, match="fused=True selects a torch kernel"):
        optiplug.optimizer("adam", [np.ones(3)], fused=True)
    a = np.ones(3)
    opt = optiplug.optimizer("adam", [a], lr=0.1, fused=False, foreach=False)
    opt.step([np.ones(3)])
    np.testing.assert_allclose(a, np.full(3, 1 - 0.1 / (1 + 1e-8)), rtol=1e-14)


def test_torch_refuses_a_parameter_listed_twice_like_numpy() -> None:
    w, b = _tensors()
    with pytest.raises(optiplug.ConfigError, match="parameter 'again' is the same Parameter as "
                                                  "parameter 'w'"):
        optiplug.optimizer("adam", [("w", w), ("b", b), ("again", w)])
    with pytest.raises(optiplug.ConfigError,
                       match="parameter '1' is the same Parameter as parameter '0'"):
        optiplug.optimizer("sgd", [{"params": [w]}, {"params": [w], "lr": 0.1}])
    opt = optiplug.optimizer("adam", [("w", w)])
    with pytest.raises(optiplug.ConfigError, match="already optimized \\(as 'w'"):
        opt.add_param_group({"params": [b, w]})
    assert len(opt.param_groups) == 1
    with pytest.raises(optiplug.ConfigError, match="same Parameter"):
        Adam([w, w])
    # NumPy refuses the same.
    array = np.ones(3)
    with pytest.raises(ValueError, match="same"):
        optiplug.optimizer("adam", [("w", array), ("again", array)])


def test_torch_refuses_integer_boolean_and_meta_tensors_naming_them() -> None:
    w, _ = _tensors()
    for bad, dtype in [(torch.zeros(3, dtype=torch.int64), "torch.int64"),
                       (torch.zeros(3, dtype=torch.bool), "torch.bool")]:
        with pytest.raises(optiplug.ConfigError,
                           match=f"parameter 'steps' has dtype {dtype}; optimizers update"):
            optiplug.optimizer("adam", {"w": w, "steps": bad})
    meta = nn.Linear(2, 2, device="meta")
    with pytest.raises(optiplug.ConfigError, match="parameter 'weight' is a meta tensor"):
        optiplug.optimizer("adamw", meta)
    opt = optiplug.optimizer("sgd", [("w", w)])
    with pytest.raises(optiplug.ConfigError, match="parameter '1' is a meta tensor"):
        opt.add_param_group({"params": [torch.empty(2, device="meta")]})
    assert len(opt.param_groups) == 1


def test_state_dict_round_trips_through_torch_save_weights_only() -> None:
    params = _tensors()
    opt = optiplug.optimizer("momentum", list(zip("ab", params, strict=True)), lr=0.1)
    for p in params:
        p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh = optiplug.optimizer("momentum", list(zip("ab", _tensors(), strict=True)), lr=0.1)
    fresh.load_state_dict(loaded)
    torch.testing.assert_close(fresh.state_dict()["state"][0]["momentum_buffer"],
                               torch.ones(3, dtype=torch.float64))
