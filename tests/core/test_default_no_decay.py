"""No weight decay on biases and normalization weights by default (timm's
``filter_bias_and_bn``), switchable off with ``decay_bias_and_norm``, on both backends, checked
step for step against ``torch.optim.AdamW`` given the same groups by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import optiplug
from optiplug.param_groups import dry_run, param_groups


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(4, 3)
        self.norm = torch.nn.LayerNorm(3)
        self.head = torch.nn.Linear(3, 2)


DECAYED = ("encoder.weight", "head.weight")
NOT_DECAYED = ("encoder.bias", "norm.weight", "norm.bias", "head.bias")
HYPER = {"lr": 0.05, "weight_decay": 0.3}
STEPS = 4


def _net() -> Net:
    torch.manual_seed(0)
    return Net().double()


def _grad(name: str, shape: tuple[int, ...], step: int) -> np.ndarray:
    rng = np.random.default_rng([step, len(name)])
    return rng.standard_normal(shape)


def _torch_run(net: Net, opt: Any) -> dict[str, np.ndarray]:
    for step in range(STEPS):
        for name, p in net.named_parameters():
            p.grad = torch.from_numpy(_grad(name, tuple(p.shape), step))
        opt.step()
    return {n: p.detach().numpy().copy() for n, p in net.named_parameters()}


def _reference(groups: list[list[str]] | None) -> dict[str, np.ndarray]:
    """torch.optim.AdamW over the same start, with the groups built by hand."""
    net = _net()
    named = dict(net.named_parameters())
    if groups is None:
        return _torch_run(net, torch.optim.AdamW(net.parameters(), **HYPER))
    decay, no_decay = groups
    return _torch_run(net, torch.optim.AdamW(
        [{"params": [named[n] for n in decay]},
         {"params": [named[n] for n in no_decay], "weight_decay": 0.0}], **HYPER))


def _optiplug(backend: str, **extra: Any) -> dict[str, np.ndarray]:
    net = _net()
    if backend == "torch":
        return _torch_run(net, optiplug.optimizer("adamw", net, **HYPER, **extra))
    arrays = {n: p.detach().numpy().copy() for n, p in net.named_parameters()}
    opt = optiplug.optimizer("adamw", arrays, **HYPER, **extra)
    for step in range(STEPS):
        opt.step({n: _grad(n, a.shape, step) for n, a in arrays.items()})
    return arrays


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_biases_and_norm_weights_get_no_decay_by_default(backend: str) -> None:
    _assert_same(_optiplug(backend), _reference([list(DECAYED), list(NOT_DECAYED)]))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_decay_bias_and_norm_decays_every_parameter_like_torch(backend: str) -> None:
    _assert_same(_optiplug(backend, decay_bias_and_norm=True), _reference(None))


def test_unnamed_tensors_are_not_filtered_and_no_decay_means_no_groups() -> None:
    net = _net()
    opt = optiplug.optimizer("adamw", list(net.parameters()), **HYPER)
    assert len(opt.param_groups) == 1 and "param_names" not in opt.param_groups[0]
    _assert_same(_torch_run(net, opt), _reference(None))
    # Without weight decay there is nothing to filter: one group, as before.
    plain = optiplug.optimizer("adam", _net(), lr=0.1)
    assert len(plain.param_groups) == 1
    assert plain.param_groups[0]["param_names"] == [*(n for n, _ in _net().named_parameters())]


def test_rules_win_over_the_default_and_the_table_marks_it() -> None:
    rules = [{"role": "bias", "weight_decay": 0.1}, {"match": "head.*", "lr_mult": 2.0}]
    result = param_groups(Net(), rules, lr=0.01, weight_decay=0.3)
    rows = {row.name: row for row in result.rows}
    assert {n: (r.weight_decay, r.no_decay) for n, r in rows.items()} == {
        "encoder.weight": (0.3, False), "encoder.bias": (0.1, False),
        "norm.weight": (0.0, True), "norm.bias": (0.1, False),
        "head.weight": (0.3, False), "head.bias": (0.1, False)}
    assert rows["head.bias"].lr == pytest.approx(0.02)
    table = result.table.splitlines()
    assert table[3].split() == ["norm.weight", "3", "1d,norm", "2", "0.01", "0", "no_decay"]
    assert table[6].split() == ["head.bias", "2", "1d,bias", "4", "0.02", "0.1", "0,1"]
    # Switched off, the default makes nothing; the rules still act.
    off = param_groups(Net(), rules, lr=0.01, weight_decay=0.3, decay_bias_and_norm=True)
    assert not any(row.no_decay for row in off.rows)
    assert {row.name: row.weight_decay for row in off.rows}["norm.weight"] == 0.3


def test_dry_run_and_the_built_optimizer_agree_on_both_backends() -> None:
    spec = optiplug.spec("optimizer", "adamw", **HYPER)
    rows = {row.name: row.weight_decay for row in dry_run(spec, Net()).rows}
    assert rows == {name: 0.0 if name in NOT_DECAYED else 0.3 for name in rows}
    for params in (Net(), {n: np.zeros(tuple(p.shape)) for n, p in Net().named_parameters()}):
        opt = optiplug.build(spec, params=params)
        built = {n: g["weight_decay"] for g in opt.param_groups for n in g["param_names"]}
        assert built == rows
    # A wrapper's dry run shows its base's groups (the base builds them).
    wrapped = optiplug.spec("optimizer", "lookahead", base={"name": "adamw", **HYPER})
    assert {row.name: row.weight_decay for row in dry_run(wrapped, Net()).rows} == rows
