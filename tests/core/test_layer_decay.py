"""Layer-wise learning-rate decay (``layer_decay``): layers from the names (or from
``layer_patterns``), the top layer at the optimizer's lr and each layer below a factor less,
checked against hand-computed scales, in the dry-run table and in the steps of both backends."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import optiplug
from optiplug.param_groups import dry_run, layer_map, param_groups


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)
        self.ln = torch.nn.LayerNorm(3)


class Tower(torch.nn.Module):
    """A stem, three numbered blocks, a final norm and a head (a ViT in miniature)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(4, 3)
        self.blocks = torch.nn.ModuleList([Block() for _ in range(3)])
        self.norm = torch.nn.LayerNorm(3)
        self.head = torch.nn.Linear(3, 2)


# By hand: embed is layer 0 (the stem), blocks.i layer i + 1, norm and head layer 4 (the top).
LAYER = {"embed": 0, "blocks.0": 1, "blocks.1": 2, "blocks.2": 3, "norm": 4, "head": 4}


def _expected_layer(name: str) -> int:
    for prefix, layer in LAYER.items():
        if name.startswith(prefix + "."):
            return layer
    raise AssertionError(name)


def test_layers_of_a_module_tree_and_their_lr_scales_match_the_hand_computed_ones() -> None:
    tower = Tower()
    result = param_groups(tower, lr=0.1, layer_decay=0.5)
    for row in result.rows:
        layer = _expected_layer(row.name)
        assert row.layer == layer, row.name
        assert row.lr_scale == 0.5 ** (4 - layer), row.name
        assert row.lr == pytest.approx(0.1 * 0.5 ** (4 - layer), rel=1e-15), row.name
    header = result.table.splitlines()[0].split()
    assert header == ["parameter", "shape", "roles", "group", "layer", "lr", "lr_scale",
                      "weight_decay", "rules"]
    assert result.table.splitlines()[1].split() == [
        "embed.weight", "3x4", "-", "0", "0", "0.00625", "0.0625", "-", "-"]
    # The same layers from named_parameters() and from a NumPy dict of the same names.
    arrays = {n: np.zeros(tuple(p.shape)) for n, p in tower.named_parameters()}
    for other in (tower.named_parameters(), arrays):
        assert param_groups(other, lr=0.1, layer_decay=0.5).rows == tuple(
            row._replace() for row in result.rows)


@pytest.mark.parametrize(("names", "layers"), [
    # nn.Sequential: each numbered child is a layer.
    (["0.weight", "0.bias", "2.weight", "2.bias"], [0, 0, 1, 1]),
    # no numbered component: one layer per first component, in order.
    (["fc1.weight", "fc1.bias", "fc2.weight", "out.weight"], [0, 0, 1, 2]),
    # an unnumbered parameter between blocks joins the block before it; after the last, the top.
    (["layers.0.w", "mid.w", "layers.1.w", "output.w", "output.b"], [0, 0, 1, 2, 2]),
    # optiplug's training model: layers.i, then output.
    (["layers.0.linear.weight", "layers.0.norm.weight", "layers.1.linear.weight",
      "output.weight"], [0, 0, 1, 2]),
])
def test_layer_map_from_names(names: list[str], layers: list[int]) -> None:
    assert layer_map(names) == (layers, max(layers) + 1)


def test_layer_patterns_place_flat_numpy_names_and_the_rest_go_on_top() -> None:
    names = ["w1", "b1", "w2", "b2", "w_out", "b_out"]
    assert layer_map(names, ["1$", "2$"]) == ([0, 0, 1, 1, 2, 2], 3)
    arrays = {name: np.zeros(2) for name in names}
    spec = optiplug.spec("optimizer", "sgd", lr=1.0, layer_decay=0.25,
                         layer_patterns=["1$", "2$"])
    assert {row.name: row.lr for row in dry_run(spec, arrays).rows} == {
        "w1": 0.0625, "b1": 0.0625, "w2": 0.25, "b2": 0.25, "w_out": 1.0, "b_out": 1.0}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_each_layer_steps_with_its_scaled_lr_on_both_backends(backend: str) -> None:
    # SGD without momentum or decay, gradient 1 everywhere: each parameter moves by its lr.
    tower = Tower().double()
    start = {n: p.detach().numpy().copy() for n, p in tower.named_parameters()}
    config = {"kind": "optimizer", "name": "sgd", "lr": 0.1, "layer_decay": 0.5}
    if backend == "torch":
        opt = optiplug.build(config, params=tower)
        for p in tower.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        end = {n: p.detach().numpy() for n, p in tower.named_parameters()}
    else:
        end = {n: a.copy() for n, a in start.items()}
        opt = optiplug.build(config, params=end)
        opt.step({n: np.ones_like(a) for n, a in end.items()})
    for name in start:
        moved = start[name] - end[name]
        np.testing.assert_allclose(moved, 0.1 * 0.5 ** (4 - _expected_layer(name)),
                                   rtol=1e-12, err_msg=name)


def test_layer_scale_multiplies_the_lr_the_rules_give_and_composes_with_no_decay() -> None:
    rules = [{"match": "head.*", "lr_mult": 10.0}, {"match": "embed.weight", "lr": 0.5}]
    result = param_groups(Tower(), rules, lr=0.1, weight_decay=0.05, layer_decay=0.5)
    rows = {row.name: row for row in result.rows}
    assert rows["head.weight"].lr == pytest.approx(1.0)           # 0.1 * 10 * 0.5**0
    assert rows["embed.weight"].lr == pytest.approx(0.5 * 0.0625)  # rule's lr * 0.5**4
    assert rows["blocks.1.fc.weight"].lr == pytest.approx(0.1 * 0.25)
    assert (rows["blocks.1.fc.bias"].weight_decay, rows["blocks.1.fc.bias"].no_decay) == (
        0.0, True)
    assert rows["blocks.1.fc.weight"].weight_decay == 0.05
    groups = {name: group for group in result.groups for name, _ in group["params"]}
    assert groups["blocks.1.fc.bias"]["lr"] == pytest.approx(0.025)
    assert groups["blocks.1.fc.bias"]["weight_decay"] == 0.0


def _issue(error: pytest.ExceptionInfo[optiplug.ConfigError]) -> tuple[str, str]:
    [issue] = error.value.issues
    return issue.path, issue.message


def test_layer_decay_errors_name_the_field() -> None:
    tower = Tower()
    with pytest.raises(optiplug.ConfigError) as error:
        optiplug.optimizer("sgd", list(tower.parameters()), lr=0.1, layer_decay=0.5)
    path, message = _issue(error)
    assert path == "layer_decay" and "needs named parameters" in message
    with pytest.raises(optiplug.ConfigError) as error:
        optiplug.optimizer("sgd", [{"params": tower.named_parameters(), "lr": 0.1}], lr=0.1,
                           layer_decay=0.5)
    path, message = _issue(error)
    assert path == "layer_decay" and "one flat set of named parameters" in message
    with pytest.raises(optiplug.ConfigError) as error:
        optiplug.optimizer("sgd", tower, lr=0.1, layer_decay=0.5,
                           layer_patterns=["^(embed|blocks)", "embed"])
    path, message = _issue(error)
    assert path == "layer_patterns.1" and "pattern 'embed' places no parameter" in message
    for bad in ({"layer_decay": 0.0}, {"layer_decay": 1.5}, {"layer_patterns": ["("]}):
        with pytest.raises(optiplug.ConfigError) as error:
            optiplug.spec("optimizer", "sgd", **bad)
        assert next(iter(bad)) in str(error.value)


def test_schedulers_keep_the_layer_ratios() -> None:
    tower = Tower()
    opt = optiplug.optimizer("sgd", tower, lr=0.1, layer_decay=0.5)
    scheduler = optiplug.scheduler("step", opt, step_size=1, gamma=0.1)
    before: dict[Any, float] = {id(g): g["lr"] for g in opt.param_groups}
    opt.step()
    scheduler.step()
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(before[id(group)] * 0.1, rel=1e-12)
