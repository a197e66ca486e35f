"""Lion as a ``torch.optim.Optimizer`` with multi-tensor (foreach) updates.

Imported only by the torch builder of :mod:`optiplug_extras.lion`: it imports torch.
:class:`Lion` is the algorithm, a plain ``torch.optim.Optimizer``; :class:`NamedLion` mixes in
optiplug's public :class:`~optiplug.backends.torch.TorchOptimizer` for named params, state
loaded by parameter name and the ``nonfinite`` policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from optiplug.backends.torch import TorchOptimizer


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): ``p -= lr * sign(b1 m + (1 - b1) g)``, then ``m = lerp(m, g)``.

    Args:
        params: Parameters or param-group dicts, as every torch optimizer takes them.
        lr: Learning rate.
        betas: Interpolation factor of the update direction and decay of the momentum.
        weight_decay: Decoupled weight decay (``p *= 1 - lr * weight_decay`` each step).
        foreach: Use the multi-tensor kernels (``None``: yes, unless a group mixes devices or
            dtypes, where the per-tensor loop is used).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
                 foreach: bool | None = None) -> None:
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"Invalid betas: {betas}")
        if not weight_decay >= 0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay,
                                  "foreach": foreach})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Lion step over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            exp_avgs = []
            for param in params:
                state = self.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param,
                                                        memory_format=torch.preserve_format)
                exp_avgs.append(state["exp_avg"])
            beta1, beta2 = group["betas"]
            lr, decay = group["lr"], group["weight_decay"]
            uniform = len({(p.device, p.dtype) for p in params}) == 1
            if group["foreach"] is False or not uniform:
                for param, grad, exp_avg in zip(params, grads, exp_avgs, strict=True):
                    if decay:
                        param.mul_(1 - lr * decay)
                    direction = exp_avg.mul(beta1).add_(grad, alpha=1 - beta1).sign_()
                    param.add_(direction, alpha=-lr)
                    exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)
                continue
            if decay:
                torch._foreach_mul_(params, 1 - lr * decay)
            directions = torch._foreach_mul(exp_avgs, beta1)
            torch._foreach_add_(directions, grads, alpha=1 - beta1)
            torch._foreach_sign_(directions)
            torch._foreach_add_(params, directions, alpha=-lr)
            torch._foreach_mul_(exp_avgs, beta2)
            torch._foreach_add_(exp_avgs, grads, alpha=1 - beta2)
        return loss


class NamedLion(TorchOptimizer, Lion):
    """:class:`Lion` with named params, name-keyed state and the ``nonfinite`` policy."""
