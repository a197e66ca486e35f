"""State saved by one technique never loads into another, even on the same torch class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optiplug


def stepped(name: str, backend: str):
    if backend == "torch":
        weight = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        weight.grad = torch.full_like(weight, 0.5)
        optimizer = optiplug.optimizer(name, {"w": weight}, lr=0.1)
        optimizer.step()
        return optimizer, lambda: weight.detach().numpy().copy()
    weight = np.ones(3)
    optimizer = optiplug.optimizer(name, {"w": weight}, lr=0.1)
    optimizer.step({"w": np.full(3, 0.5)})
    return optimizer, weight.copy


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(("saved", "loaded"), [("sgd", "momentum"), ("momentum", "nesterov"),
                                               ("nesterov", "sgd")])
def test_sgd_family_state_is_refused_by_another_technique(backend, saved, loaded):
    source, _ = stepped(saved, backend)
    target, value = stepped(loaded, backend)
    before, groups = value(), [dict(g, params=None) for g in target.param_groups]
    with pytest.raises(optiplug.ConfigError, match=rf"(?i)not of .*{loaded}"):
        target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(value(), before)
    assert [dict(g, params=None) for g in target.param_groups] == groups


def test_same_technique_state_loads_and_plain_torch_state_still_loads():
    source, _ = stepped("momentum", "torch")
    target, _ = stepped("momentum", "torch")
    target.load_state_dict(source.state_dict())
    assert target.state_dict()["technique"] == "momentum"
    weight = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    weight.grad = torch.ones_like(weight)
    plain = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    plain.step()
    fresh = optiplug.optimizer("momentum", [weight], lr=0.1)
    fresh.load_state_dict(plain.state_dict())  # no technique recorded: by class and groups
    torch.testing.assert_close(fresh.state[weight]["momentum_buffer"],
                               plain.state[weight]["momentum_buffer"])
