"""torch's own optimizer classes with :class:`~optiplug.backends.torch.TorchOptimizer` mixed in.

Imported only by torch builders (it imports torch): named params in every form, state loaded
by parameter name, the ``nonfinite`` policy, on top of torch's unchanged math. Kernels are
torch's own choice (``foreach`` on accelerators, the for-loop on CPU), except that on the CPU
RAdam, NAdam, Adamax and Rprop take torch's ``foreach`` kernel for param groups of small
tensors, where it measured faster (``FOREACH_MAX_NUMEL``, decided once per group; see
docs/performance.md); ASGD keeps the for-loop (its foreach kernel measured slower in every
layout). Both kernels skip parameters whose ``grad`` is ``None`` and keep each parameter's
own step count, so they agree for every gradient pattern.
"""

from __future__ import annotations

from typing import Any

import torch

from optiplug.backends.torch import FOREACH_MAX_NUMEL, TorchOptimizer

__all__ = ["ASGD", "LBFGS", "Adafactor", "Adamax", "Muon", "MuonWithAdamW", "NAdam", "RAdam",
           "Rprop", "muon_lr", "newton_schulz"]


class _ScalarState(TorchOptimizer):
    """Keeps the per-parameter scalar state (``scalar_state_keys``) in torch's scalar dtype
    across ``load_state_dict``: torch casts it to the parameter's dtype on loading, so a resumed
    NAdam or ASGD would not continue with exactly the numbers of the uninterrupted run."""

    scalar_state_keys: tuple[str, ...] = ()

    def load_state_dict(self, state_dict: Any) -> None:
        super().load_state_dict(state_dict)
        dtype = _scalar_dtype()
        for state in self.state.values():
            for key in self.scalar_state_keys:
                value = state.get(key)
                if isinstance(value, torch.Tensor) and value.dim() == 0:
                    state[key] = value.to(dtype)


class RAdam(TorchOptimizer, torch.optim.RAdam):
    """``torch.optim.RAdam`` with named params and state (CPU: foreach for small tensors)."""

    torch_class = torch.optim.RAdam
    foreach_max_numel = FOREACH_MAX_NUMEL


class NAdam(_ScalarState, torch.optim.NAdam):
    """``torch.optim.NAdam`` with named params and state (CPU: foreach for small tensors)."""

    torch_class = torch.optim.NAdam
    foreach_max_numel = FOREACH_MAX_NUMEL
    scalar_state_keys = ("mu_product",)


class Adamax(TorchOptimizer, torch.optim.Adamax):
    """``torch.optim.Adamax`` with named params and state (CPU: foreach for small tensors)."""

    torch_class = torch.optim.Adamax
    foreach_max_numel = FOREACH_MAX_NUMEL


class ASGD(_ScalarState, torch.optim.ASGD):
    """``torch.optim.ASGD`` with named params and state (torch's for-loop on the CPU)."""

    torch_class = torch.optim.ASGD
    scalar_state_keys = ("eta", "mu")


class Rprop(TorchOptimizer, torch.optim.Rprop):
    """``torch.optim.Rprop`` with named params and state (CPU: foreach for small tensors)."""

    torch_class = torch.optim.Rprop
    foreach_max_numel = FOREACH_MAX_NUMEL


class Adafactor(TorchOptimizer, torch.optim.Adafactor):
    """``torch.optim.Adafactor`` with named params and state (torch's for-loop kernel, the
    memory-lean one: Adafactor is chosen to save memory)."""

    torch_class = torch.optim.Adafactor

    def state_shape(self, key: str, param: torch.Tensor) -> tuple[int, ...]:
        shape = tuple(param.shape)
        if key == "row_var":
            return (*shape[:-1], 1)
        if key == "col_var":
            return (*shape[:-2], 1, shape[-1])
        return shape


class LBFGS(TorchOptimizer, torch.optim.LBFGS):
    """``torch.optim.LBFGS`` with named params and state; ``step(closure)`` needs a closure."""

    torch_class = torch.optim.LBFGS
    requires_closure = True

    def state_shape(self, key: str, param: torch.Tensor) -> tuple[int, ...]:
        # The global state (kept with the first parameter) holds flat vectors of all elements.
        if key in ("d", "prev_flat_grad"):
            return (sum(p.numel() for g in self.param_groups for p in g["params"]),)
        return tuple(param.shape)

    def step(self, closure: Any = None) -> Any:
        """One L-BFGS step: ``closure`` zeroes the grads, computes the loss, calls
        ``backward()`` and returns the loss; it is called as often as the step needs."""
        if not callable(closure):
            raise TypeError("lbfgs needs a closure: opt.step(closure), where closure() zeroes "
                            "the grads, computes the loss, calls backward() and returns it")
        return super().step(closure)


def newton_schulz(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int,
                  eps: float, dtype: str) -> torch.Tensor:
    """torch.optim.Muon's quintic Newton-Schulz orthogonalization of a matrix.

    ``dtype="bfloat16"`` is torch's own function (the iteration in bfloat16); ``"param"`` runs
    the same iteration in the matrix's dtype."""
    if dtype == "bfloat16":
        from torch.optim._muon import _zeropower_via_newtonschulz

        return _zeropower_via_newtonschulz(update, coefficients, steps, eps)
    a, b, c = coefficients
    tall = update.size(0) > update.size(1)
    x = update.T if tall else update
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        gram_update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, gram_update, x, beta=a)
    return x.T if tall else x


def muon_lr(lr: float, adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """torch.optim.Muon's learning rate for a matrix of ``shape``."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * max(rows, cols) ** 0.5
    return lr * max(1.0, rows / cols) ** 0.5


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the matrices (2-D parameters) of every group, AdamW for the rest, one optimizer.

    The matrices step exactly as ``torch.optim.Muon`` steps them (momentum, Newton-Schulz,
    decoupled decay, adjusted lr) and the other parameters exactly as ``torch.optim.AdamW``
    with the group's ``adamw_*`` hyperparameters. State: ``momentum_buffer`` per matrix;
    ``step``, ``exp_avg``, ``exp_avg_sq`` per other parameter.
    """

    def __init__(self, params: Any, lr: float = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True,
                 ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
                 eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: str | None = None,
                 ns_dtype: str = "bfloat16", adamw_lr: float = 1e-3,
                 adamw_betas: tuple[float, float] = (0.9, 0.999), adamw_eps: float = 1e-8,
                 adamw_weight_decay: float = 1e-2) -> None:
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                    "nesterov": nesterov, "ns_coefficients": tuple(ns_coefficients), "eps": eps,
                    "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn, "ns_dtype": ns_dtype,
                    "adamw_lr": adamw_lr, "adamw_betas": tuple(adamw_betas),
                    "adamw_eps": adamw_eps, "adamw_weight_decay": adamw_weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step of Muon (matrices) and AdamW (the rest) over every group."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            others: list[torch.Tensor] = []
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse or torch.is_complex(param):
                    raise RuntimeError("muon supports dense real parameters only")
                if param.ndim == 2:
                    self._muon_step(group, param)
                else:
                    others.append(param)
            if others:
                self._adamw_step(group, others)
        return loss

    def _muon_step(self, group: dict[str, Any], param: torch.Tensor) -> None:
        grad, momentum = param.grad, group["momentum"]
        assert grad is not None
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
        buffer = state["momentum_buffer"]
        buffer.lerp_(grad, 1 - momentum)
        update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
        update = newton_schulz(update, group["ns_coefficients"], group["ns_steps"],
                               group["eps"], group["ns_dtype"])
        param.mul_(1 - group["lr"] * group["weight_decay"])
        param.add_(update, alpha=-muon_lr(group["lr"], group["adjust_lr_fn"],
                                          tuple(param.shape)))

    def _adamw_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        from torch.optim.adam import adam

        grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
        for param in params:
            state = self.state[param]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
                state["exp_avg"] = torch.zeros_like(param)
                state["exp_avg_sq"] = torch.zeros_like(param)
            grads.append(param.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2 = group["adamw_betas"]
        # torch's multi-tensor kernel: the AdamW part holds the many small tensors (biases,
        # norm weights), where it is the faster one (see FOREACH_MAX_NUMEL).
        foreach = all(type(p) in (torch.Tensor, torch.nn.Parameter) for p in params)
        adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=foreach, amsgrad=False,
             beta1=beta1, beta2=beta2, lr=group["adamw_lr"],
             weight_decay=group["adamw_weight_decay"], eps=group["adamw_eps"], maximize=False,
             decoupled_weight_decay=True)


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class Muon(TorchOptimizer, MuonWithAdamW):
    """:class:`MuonWithAdamW` with named params and state."""

    torch_class = MuonWithAdamW
