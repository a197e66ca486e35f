"""The torch backend's kernel choice per param-group layout (foreach for small tensors on CPU).

Reference: torch.optim's own class with its default kernel (the for-loop on the CPU), run on
the same parameters and gradients, with gradients that are ``None`` on some steps (a parameter
that joins late, one that skips steps) in float64.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

import optiplug
from optiplug.backends.torch import FOREACH_MAX_NUMEL

TORCH_CLASS = {"rmsprop": "RMSprop", "adadelta": "Adadelta", "radam": "RAdam",
               "nadam": "NAdam", "adamax": "Adamax", "rprop": "Rprop", "asgd": "ASGD"}
HYPER: dict[str, dict[str, Any]] = {"rmsprop": {"lr": 1e-2, "momentum": 0.5},
                                    "adadelta": {"lr": 1.0}, "radam": {"lr": 1e-2},
                                    "nadam": {"lr": 1e-2}, "adamax": {"lr": 1e-2},
                                    "rprop": {"lr": 1e-2}, "asgd": {"lr": 1e-2}}
FOREACH_ON_SMALL = {"rmsprop", "adadelta", "radam", "nadam", "adamax", "rprop"}
# Parameter -> the steps on which it has a gradient (None on the others).
SMALL = {"always": (range(6), (3, 4)), "late": (range(2, 6), (5,)),
         "skips": ((0, 2, 3, 5), (2, 2))}
LARGE = {"big": (range(6), (FOREACH_MAX_NUMEL + 1,)),
         "big_late": (range(1, 6), (2, FOREACH_MAX_NUMEL // 2 + 1))}


def _start() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(shape) for name, (_, shape) in {**SMALL, **LARGE}.items()}


def _trajectory(make: Any) -> list[dict[str, np.ndarray]]:
    """Six steps of the optimizer ``make(small_params, large_params)`` builds."""
    torch.manual_seed(0)
    params = {name: torch.nn.Parameter(torch.tensor(value)) for name, value in _start().items()}
    opt = make({n: params[n] for n in SMALL}, {n: params[n] for n in LARGE})
    steps = {**SMALL, **LARGE}
    rng = np.random.default_rng(1)
    out = []
    for step in range(6):
        for name, param in params.items():
            grad = rng.standard_normal(param.shape) + param.detach().numpy()
            param.grad = torch.tensor(grad) if step in steps[name][0] else None
        opt.step()
        out.append({name: param.detach().numpy().copy() for name, param in params.items()})
    return out


@pytest.mark.parametrize("name", sorted(TORCH_CLASS))
def test_chosen_kernel_gives_torch_default_kernels_numbers_for_every_gradient_pattern(
        name: str) -> None:
    cls = getattr(torch.optim, TORCH_CLASS[name])
    hyper = HYPER[name]
    chosen: list[Any] = []

    def ours(small: dict[str, Any], large: dict[str, Any]) -> Any:
        opt = optiplug.optimizer(name, {"params": list(small.items())}, **hyper)
        # The second group joins later, as a new head would: its layout is decided on its own.
        opt.add_param_group({"params": list(large.items())})
        chosen.extend(group.get("foreach") for group in opt.param_groups)
        return opt

    def reference(small: dict[str, Any], large: dict[str, Any]) -> Any:
        return cls([{"params": list(small.values())}, {"params": list(large.values())}],
                   **hyper)

    expected = _trajectory(reference)
    actual = _trajectory(ours)
    assert chosen == [True if name in FOREACH_ON_SMALL else None, None]
    for step, (got, want) in enumerate(zip(actual, expected, strict=True)):
        for param in got:
            np.testing.assert_allclose(got[param], want[param], rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name}: {param} at step {step}")


def test_kernel_the_user_sets_is_kept_and_the_state_dict_records_the_request() -> None:
    params = {"w": torch.nn.Parameter(torch.ones(3, 4))}
    picked = optiplug.optimizer("rmsprop", params, lr=1e-2)
    assert picked.param_groups[0]["foreach"] is True
    # What the user asked for (nothing), so plain torch.optim loading it keeps its default.
    assert picked.state_dict()["param_groups"][0]["foreach"] is None
    kept = optiplug.optimizer("rmsprop", params, lr=1e-2, foreach=False)
    assert kept.param_groups[0]["foreach"] is False
    per_group = optiplug.optimizer("adadelta", [{"params": [params["w"]], "foreach": False}])
    assert per_group.param_groups[0]["foreach"] is False


def test_kernel_choice_travels_from_a_config_through_a_checkpoint_to_plain_torch() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1)).double()
    inputs = torch.randn(8, 4, dtype=torch.float64)
    opt = optiplug.build({"kind": "optimizer", "name": "radam", "lr": 1e-2}, backend="torch",
                         params=model.named_parameters())
    assert opt.param_groups[0]["foreach"] is True

    def step(optimizer: Any) -> None:
        optimizer.zero_grad()
        model(inputs).square().mean().backward()
        optimizer.step()

    for _ in range(3):
        step(opt)
    checkpoint = copy.deepcopy(opt.state_dict())
    saved = [p.detach().clone() for p in model.parameters()]
    step(opt)
    ours = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for param, value in zip(model.parameters(), saved, strict=True):
            param.copy_(value)
    twin = torch.optim.RAdam(model.parameters(), lr=1e-2)
    twin.load_state_dict(checkpoint)
    assert twin.param_groups[0]["foreach"] is None  # torch keeps its own default
    step(twin)
    for got, want in zip(ours, model.parameters(), strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-14)
