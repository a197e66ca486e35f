"""Param-group rules by name and role: resolution, errors, dry-run table, both backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optiplug
from optiplug.param_groups import ParamGroupRule, param_groups


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(4, 3)
        self.norm = torch.nn.LayerNorm(3)
        self.head = torch.nn.Linear(3, 2)


def _lookup(groups: list[dict], name: str) -> dict:
    for group in groups:
        if name in [n for n, _ in group["params"]]:
            return group
    raise AssertionError(name)


def test_rules_by_role_and_pattern_set_weight_decay_and_lr_multiplier() -> None:
    result = param_groups(Net(), [{"role": "bias", "weight_decay": 0.0},
                                  {"role": "norm", "weight_decay": 0.0},
                                  {"match": "head.*", "lr_mult": 10.0}],
                          lr=0.01, weight_decay=0.05)
    lr = {row.name: row.lr for row in result.rows}
    decay = {row.name: row.weight_decay for row in result.rows}
    assert decay == {"encoder.weight": 0.05, "encoder.bias": 0.0, "norm.weight": 0.0,
                     "norm.bias": 0.0, "head.weight": 0.05, "head.bias": 0.0}
    assert lr == {"encoder.weight": 0.01, "encoder.bias": 0.01, "norm.weight": 0.01,
                  "norm.bias": 0.01, "head.weight": pytest.approx(0.1),
                  "head.bias": pytest.approx(0.1)}
    assert _lookup(result.groups, "head.bias") == {
        "params": [("head.bias", _lookup(result.groups, "head.bias")["params"][0][1])],
        "weight_decay": 0.0, "lr": pytest.approx(0.1)}
    # Parameters with equal settings share one group; groups keep first-appearance order.
    assert [[n for n, _ in g["params"]] for g in result.groups] == [
        ["encoder.weight"], ["encoder.bias", "norm.weight", "norm.bias"], ["head.weight"],
        ["head.bias"]]
    lines = result.table.splitlines()
    assert lines[0].split() == ["parameter", "shape", "roles", "group", "lr", "weight_decay",
                                "rules"]
    assert lines[1].split() == ["encoder.weight", "3x4", "-", "0", "0.01", "0.05", "-"]
    assert lines[4].split() == ["norm.bias", "3", "1d,bias", "1", "0.01", "0", "0"]


def test_norm_role_from_names_for_numpy_params() -> None:
    params = {"layers.0.weight": np.zeros((3, 3)), "layers.0.bn1.weight": np.zeros(3),
              "ln_f.weight": np.zeros(3), "embed.scale": np.zeros(3)}
    result = param_groups(params, [{"role": "norm", "weight_decay": 0.0}], weight_decay=0.1)
    assert {r.name: r.weight_decay for r in result.rows} == {
        "layers.0.weight": 0.1, "layers.0.bn1.weight": 0.0, "ln_f.weight": 0.0,
        "embed.scale": 0.1}


def test_regex_and_1d_rules_combine_selectors() -> None:
    params = {"a.weight": np.zeros((2, 2)), "a.bias": np.zeros(2), "b.weight": np.zeros(2)}
    result = param_groups(params, [{"regex": "^a\\.", "role": "1d", "lr": 0.5}], lr=0.1)
    assert {r.name: r.lr for r in result.rows} == {"a.weight": 0.1, "a.bias": 0.5,
                                                  "b.weight": 0.1}


def test_rule_matching_nothing_is_an_error_naming_the_rule() -> None:
    with pytest.raises(optiplug.ConfigError, match=r"1: rule \(match='decoder\.\*'\) matches "
                                                   r"no parameter"):
        param_groups(Net(), [{"role": "bias", "weight_decay": 0.0},
                             {"match": "decoder.*", "lr": 0.1}], lr=0.01)


def test_conflicting_rules_on_one_parameter_are_an_error() -> None:
    with pytest.raises(optiplug.ConfigError, match=r"'head\.bias' is matched by rule 0 .* and "
                                                   r"rule 1 .*different weight_decay"):
        param_groups(Net(), [{"role": "bias", "weight_decay": 0.0},
                             {"match": "head.*", "weight_decay": 0.1}])
    with pytest.raises(optiplug.ConfigError, match="different lr"):
        param_groups(Net(), [{"match": "head.*", "lr": 0.1}, {"role": "bias", "lr_mult": 2.0}],
                     lr=0.01)


def test_agreeing_rules_on_one_parameter_are_merged() -> None:
    result = param_groups(Net(), [{"role": "bias", "weight_decay": 0.0},
                                  {"match": "head.*", "weight_decay": 0.0, "lr": 0.5}],
                          lr=0.01, weight_decay=0.1)
    row = next(r for r in result.rows if r.name == "head.bias")
    assert (row.lr, row.weight_decay, row.rules) == (0.5, 0.0, (0, 1))


def test_rules_are_strict_frozen_and_validated() -> None:
    rule = ParamGroupRule(role="bias", weight_decay=0.0)
    with pytest.raises(Exception, match="frozen"):
        rule.weight_decay = 1.0  # type: ignore[misc]
    for bad in ({"weight_decay": 0.0}, {"role": "bias"}, {"role": "bias", "lr": 0.1,
                                                           "lr_mult": 2.0},
                {"regex": "(", "lr": 0.1}, {"role": "bias", "weight_decay": "0"},
                {"role": "weights", "lr": 0.1}, {"role": "bias", "lr": -1.0}):
        with pytest.raises(optiplug.ConfigError):
            param_groups(Net(), [bad])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_optimizer_config_with_param_group_rules_applies_them_on_both_backends(
        backend: str) -> None:
    # AdamW, decoupled decay only: with zero gradients p *= 1 - lr * weight_decay per step.
    rules = [{"role": "bias", "weight_decay": 0.0}, {"match": "head.*", "lr_mult": 2.0}]
    # decay_bias_and_norm: norm.weight decays (no default filter), only the rules act.
    config = {"kind": "optimizer", "name": "adamw", "lr": 0.1, "weight_decay": 0.5,
              "decay_bias_and_norm": True, "param_groups": rules}
    if backend == "torch":
        net = Net().double()
        params: dict = dict(net.named_parameters())
        with torch.no_grad():
            for p in params.values():
                p.fill_(1.0)
        opt = optiplug.build(config, params=net)
        for p in params.values():
            p.grad = torch.zeros_like(p)
        opt.step()
        values = {n: p.detach().numpy() for n, p in params.items()}
    else:
        values = {n: np.ones(tuple(p.shape)) for n, p in Net().named_parameters()}
        opt = optiplug.build(config, params=values)
        opt.step({n: np.zeros_like(v) for n, v in values.items()})
    expected = {"encoder.weight": 1 - 0.1 * 0.5, "encoder.bias": 1.0, "norm.weight": 0.95,
                "norm.bias": 1.0, "head.weight": 1 - 0.2 * 0.5, "head.bias": 1.0}
    for name, value in expected.items():
        np.testing.assert_allclose(values[name], value, rtol=1e-12, err_msg=name)


def test_bad_rule_in_optimizer_config_reports_its_path() -> None:
    config = {"kind": "optimizer", "name": "adam", "param_groups": [{"role": "bias"}]}
    with pytest.raises(optiplug.ConfigError, match=r"param_groups\.0"):
        optiplug.build(config, params={"bias": np.zeros(2)})
    config = {"kind": "optimizer", "name": "adam",
              "param_groups": [{"match": "nothing*", "lr": 0.1}]}
    with pytest.raises(optiplug.ConfigError, match=r"param_groups\.0: rule .* matches no"):
        optiplug.build(config, params={"bias": np.zeros(2)})


def test_dry_run_from_optimizer_spec_and_shapes_prints_the_table() -> None:
    from optiplug.param_groups import dry_run

    spec = optiplug.spec("optimizer", "adamw", lr=0.01, weight_decay=0.1,
                         param_groups=[{"role": "1d", "weight_decay": 0.0}])
    result = dry_run(spec, {"fc.weight": [3, 4], "fc.bias": [3]})
    assert result.table.splitlines()[1:] == [
        "fc.weight  3x4    -        0      0.01  0.1           -",
        "fc.bias    3      1d,bias  1      0.01  0             0"]
