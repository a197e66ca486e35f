"""torch optimizers of the paper-defined techniques (lion, lamb, lars, adan, adopt, adabelief).

Imported only by their torch builders (it imports torch). Each ``<Name>Algorithm`` is a plain
``torch.optim.Optimizer`` whose step runs multi-tensor ``torch._foreach_*`` kernels over the
parameters of a group that have a gradient (a ``None`` grad skips the parameter, its state and
its step count, as in ``torch.optim``); each ``<Name>`` adds
:class:`optiplug.backends.torch.TorchOptimizer` (named params, state by name, ``nonfinite``).

Parameters of one group are updated together when they share device, dtype and step count
(bias corrections depend on each parameter's own step count, which differs after steps where
some grads were ``None``). The math and its conventions are documented in each technique's
plugin module.

On the CPU, an algorithm with a :attr:`ForeachAlgorithm.kernel` (the plugin's NumPy fused
kernel) runs it on the tensors in place instead of its chain of foreach kernels: one pass over
memory instead of one per operation (see :func:`optiplug.backends.torch.run_kernel`). It does
so when numba is the NumPy kernel engine (``OPTIPLUG_NUMPY_KERNELS``) and the tensors are
dense, contiguous float32/float64 CPU tensors; elsewhere (CUDA, ``OPTIPLUG_NUMPY_KERNELS=numpy``)
the foreach chain runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from optiplug.backends.numpy import FusedKernel, kernel_engine
from optiplug.backends.torch import TorchOptimizer, kernel_ready, run_kernel
from optiplug.plugins.optimizers.adabelief import adabelief_kernel, adabelief_scalars
from optiplug.plugins.optimizers.adan import adan_kernel, adan_scalars
from optiplug.plugins.optimizers.adopt import adopt_kernel, adopt_scalars
from optiplug.plugins.optimizers.lamb import (
    lamb_kernel,
    lamb_scalars,
    lamb_sums_kernel,
    lamb_tensor_kernel,
    lamb_trust_ratio,
)
from optiplug.plugins.optimizers.lars import (
    lars_kernel,
    lars_local_rate,
    lars_sums_kernel,
    lars_tensor_kernel,
)
from optiplug.plugins.optimizers.lion import lion_kernel, lion_scalars
from optiplug.plugins.optimizers.schedule_free import advance
from optiplug.plugins.optimizers.schedule_free_adamw import (
    schedule_free_adamw_kernel,
    schedule_free_adamw_scalars,
)
from optiplug.plugins.optimizers.schedule_free_sgd import (
    schedule_free_sgd_kernel,
    schedule_free_sgd_scalars,
)

__all__ = ["Adabelief", "AdabeliefAlgorithm", "Adan", "AdanAlgorithm", "Adopt", "AdoptAlgorithm",
           "ForeachAlgorithm", "check_hyperparameters",
           "Lamb", "LambAlgorithm", "Lars", "LarsAlgorithm", "Lion", "LionAlgorithm",
           "ScheduleFreeAdamW", "ScheduleFreeAdamWAlgorithm", "ScheduleFreeSGD",
           "ScheduleFreeSGDAlgorithm"]

Tensors = list[torch.Tensor]


class ForeachAlgorithm(torch.optim.Optimizer):
    """Shared step: state allocation, per-parameter step counts and buckets for the kernels."""

    state_names: ClassVar[tuple[str, ...]] = ()
    kernel: ClassVar[FusedKernel | None] = None
    """The NumPy fused kernel ``kernel(param, grad, *states, *scalars)`` of the CPU path
    (states in :attr:`state_names` order, scalars from :meth:`kernel_scalars`); ``None``: the
    foreach chain everywhere."""

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        self._choose_kernels()

    def _choose_kernels(self) -> None:
        self.kernels = "numba" if self.kernel is not None and kernel_engine() == "numba" \
            else "foreach"
        """``"numba"``: CPU tensors take :attr:`kernel` (chosen when built or unpickled, from
        ``OPTIPLUG_NUMPY_KERNELS``); ``"foreach"``: the foreach chain everywhere."""
        self.kernel_views: dict[Any, Any] = {}
        """NumPy views of the parameters and states, reused by the fused kernels."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._choose_kernels()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's, then forget the views of the replaced state tensors."""
        super().load_state_dict(state_dict)
        self.kernel_views.clear()

    def init_state(self, group: dict[str, Any], param: torch.Tensor,
                   name: str) -> torch.Tensor:
        """The initial value of state ``name`` of ``param`` (zeros)."""
        return torch.zeros_like(param, memory_format=torch.preserve_format)

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        """One step of the parameters ``params`` (same device, dtype and step count)."""
        raise NotImplementedError

    def kernel_scalars(self, group: dict[str, Any], step: int) -> tuple[Any, ...]:
        """The trailing arguments of :attr:`kernel` for parameters at step count ``step``."""
        raise NotImplementedError

    def update_fused(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
                     states: Sequence[Tensors]) -> None:
        """:meth:`update` by the fused kernel (tensors that passed
        :func:`~optiplug.backends.torch.kernel_ready`)."""
        assert self.kernel is not None
        run_kernel(self.kernel, params, grads, states, self.kernel_scalars(group, step),
                   views=self.kernel_views)

    def begin_group(self, group: dict[str, Any]) -> None:
        """Called once per group at every step, before its updates (nothing by default)."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self.begin_group(group)
            # Per bucket: its params, grads and state dicts (each looked up once per step).
            buckets: dict[tuple[Any, ...], tuple[list[Any], list[Any], list[Any]]] = {}
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse "
                                       f"gradients")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    for name in self.state_names:
                        state[name] = self.init_state(group, param, name)
                state["step"] += 1
                key = (param.device, param.dtype, state["step"])
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = buckets[key] = ([], [], [])
                bucket[0].append(param)
                bucket[1].append(grad)
                bucket[2].append(state)
            for (_, _, step), (params, grads, own) in buckets.items():
                states = [[state[name] for state in own] for name in self.state_names]
                if self.kernels == "numba" and kernel_ready(
                        [*params, *grads, *(t for state in states for t in state)]):
                    self.update_fused(group, step, params, grads, states)  # type: ignore[arg-type]
                else:
                    self.update(group, step, params, grads, states)  # type: ignore[arg-type]
        return loss


def whole_tensors_per_thread(params: Tensors) -> bool:
    """Whether there are enough tensors (four per thread) to deal whole ones out to the
    threads: then a rule that needs per-tensor norms (LAMB, LARS) runs its norms and its
    update tensor by tensor, the update on data the norms just left in the cache. With fewer,
    its two passes each split the tensors between the threads."""
    return len(params) >= 4 * torch.get_num_threads()


def check_hyperparameters(lr: float, betas: Sequence[float], weight_decay: float) -> None:
    """torch.optim's argument checks: ``lr > 0``, every beta in ``[0, 1)``, ``wd >= 0``."""
    if not lr > 0:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not all(0.0 <= beta < 1.0 for beta in betas):
        raise ValueError(f"Invalid betas: {tuple(betas)}")
    if not weight_decay >= 0:
        raise ValueError(f"Invalid weight_decay: {weight_decay}")


# ----------------------------------------------------------------------------------- lion
class LionAlgorithm(ForeachAlgorithm):
    """Lion: ``p = p (1 - lr wd) - lr sign(lerp(m, g, 1 - b1))``, ``m = lerp(m, g, 1 - b2)``."""

    state_names = ("exp_avg",)
    kernel = lion_kernel

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        check_hyperparameters(lr, betas, weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    def kernel_scalars(self, group: dict[str, Any], step: int) -> tuple[Any, ...]:
        return lion_scalars(group, step)

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        (exp_avgs,) = states
        beta1, beta2 = group["betas"]
        lr, decay = group["lr"], group["weight_decay"]
        if decay:
            torch._foreach_mul_(params, 1 - lr * decay)
        directions = torch._foreach_lerp(exp_avgs, grads, 1 - beta1)
        # sign(c) + 0 c: NaN where c is NaN or infinite (torch.sign maps NaN to 0). One read of
        # c (its norm: not finite if an element is not) finds the rare tensors that need the
        # second term, instead of two more passes over every tensor; a norm that overflows
        # sends a finite tensor there too, where adding 0 c changes nothing.
        norms = torch.stack(torch._foreach_norm(directions)).isfinite().tolist()
        nonfinite = {i: directions[i] * 0.0 for i, finite in enumerate(norms) if not finite}
        torch._foreach_sign_(directions)
        for i, term in nonfinite.items():
            directions[i].add_(term)
        torch._foreach_add_(params, directions, alpha=-lr)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta2)


class Lion(TorchOptimizer, LionAlgorithm):
    """:class:`LionAlgorithm` with named params and state."""

    torch_class = LionAlgorithm


# ----------------------------------------------------------------------------------- lamb
def _trust_ratios(numerators: Tensors, denominators: Tensors) -> Tensors:
    """``n / d`` per tensor, ``1`` where either norm is zero (LAMB's and LARS's convention)."""
    num = torch.stack(numerators)
    den = torch.stack(denominators)
    ratios = torch.where((num > 0) & (den > 0), num / den, torch.ones_like(num))
    return list(ratios.unbind())


class LambAlgorithm(ForeachAlgorithm):
    """LAMB (You et al. 2020, Algorithm 2), see :mod:`optiplug.plugins.optimizers.lamb`."""

    state_names = ("exp_avg", "exp_avg_sq")
    kernel = lamb_kernel

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, bias_correction: bool = True,
                 max_weight_norm: float | None = None) -> None:
        check_hyperparameters(lr, betas, weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay,
                                  "bias_correction": bias_correction,
                                  "max_weight_norm": max_weight_norm})

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        exp_avgs, exp_avg_sqs = states
        beta1, beta2 = group["betas"]
        decay = group["weight_decay"]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        # r = m_hat / (sqrt(v_hat) + eps) = m / (sqrt(v) + eps sqrt(bc2)) * sqrt(bc2) / bc1.
        if group["bias_correction"]:
            bc2_sqrt = math.sqrt(1 - beta2**step)
            scale = bc2_sqrt / (1 - beta1**step)
        else:
            bc2_sqrt, scale = 1.0, 1.0
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denominators, group["eps"] * bc2_sqrt)
        updates = torch._foreach_div(exp_avgs, denominators)
        if scale != 1.0:
            torch._foreach_mul_(updates, scale)
        if decay:
            torch._foreach_add_(updates, params, alpha=decay)
        weight_norms = list(torch._foreach_norm(params))
        if group["max_weight_norm"] is not None:
            torch._foreach_clamp_max_(weight_norms, group["max_weight_norm"])
        ratios = _trust_ratios(weight_norms, list(torch._foreach_norm(updates)))
        torch._foreach_mul_(ratios, -group["lr"])
        torch._foreach_mul_(updates, ratios)
        torch._foreach_add_(params, updates)

    def update_fused(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
                     states: Sequence[Tensors]) -> None:
        weight1, beta2, one_minus_beta2, eps, scale, decay, lr, max_weight_norm = \
            lamb_scalars(group, step)
        if whole_tensors_per_thread(params):
            limit = math.inf if max_weight_norm is None else float(max_weight_norm)
            run_kernel(lamb_tensor_kernel, params, grads, states,
                       (weight1, beta2, one_minus_beta2, eps, scale, decay, np.float64(lr),
                        np.float64(limit)), split=False, views=self.kernel_views)
            return
        # Few tensors: pass 1, the moments and the squared norms of p and r; pass 2, r again
        # (from the new moments, no tensor of r kept) and the step.
        sums = run_kernel(lamb_sums_kernel, params, grads, states,
                          (weight1, beta2, one_minus_beta2, eps, scale, decay),
                          views=self.kernel_views)
        steps = [(-lr * lamb_trust_ratio(math.sqrt(weights), math.sqrt(updates),
                                         max_weight_norm),) for weights, updates in sums]
        run_kernel(lamb_kernel, params, grads, states, (eps, scale, decay),
                   param_scalars=steps, views=self.kernel_views)


class Lamb(TorchOptimizer, LambAlgorithm):
    """:class:`LambAlgorithm` with named params and state."""

    torch_class = LambAlgorithm


# ----------------------------------------------------------------------------------- lars
class LarsAlgorithm(ForeachAlgorithm):
    """LARS (You et al. 2017, Algorithm 1), see :mod:`optiplug.plugins.optimizers.lars`."""

    state_names = ("momentum_buffer",)
    kernel = lars_kernel

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, trust_coefficient: float = 1e-3,
                 exclude_1d: bool = True) -> None:
        check_hyperparameters(lr, (momentum,), weight_decay)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "trust_coefficient": trust_coefficient,
                                  "exclude_1d": exclude_1d})

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        (buffers,) = states
        lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
        exclude_1d = group["exclude_1d"]
        adapted = [i for i, p in enumerate(params) if p.ndim > 1 or not exclude_1d]
        plain = [i for i, p in enumerate(params) if p.ndim <= 1 and exclude_1d]
        if adapted:
            a_params = [params[i] for i in adapted]
            a_grads = [grads[i] for i in adapted]
            weight_norms = list(torch._foreach_norm(a_params))
            grad_norms = list(torch._foreach_norm(a_grads))
            if decay:
                torch._foreach_add_(grad_norms, weight_norms, alpha=decay)
            numerators = torch._foreach_mul(weight_norms, group["trust_coefficient"])
            ratios = _trust_ratios(numerators, grad_norms)
            # v = m v + lr ratio g + lr ratio wd p; p -= v (the 0-d factors broadcast).
            torch._foreach_mul_(ratios, lr)
            a_buffers = [buffers[i] for i in adapted]
            torch._foreach_mul_(a_buffers, momentum)
            torch._foreach_addcmul_(a_buffers, a_grads, ratios)
            if decay:
                torch._foreach_addcmul_(a_buffers, a_params, torch._foreach_mul(ratios, decay))
            torch._foreach_sub_(a_params, a_buffers)
        if plain:
            p_params = [params[i] for i in plain]
            p_buffers = [buffers[i] for i in plain]
            torch._foreach_mul_(p_buffers, momentum)
            torch._foreach_add_(p_buffers, [grads[i] for i in plain], alpha=lr)
            torch._foreach_sub_(p_params, p_buffers)

    def update_fused(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
                     states: Sequence[Tensors]) -> None:
        lr, decay = group["lr"], group["weight_decay"]
        exclude_1d = group["exclude_1d"]
        if whole_tensors_per_thread(params):
            adapt = [(0.0 if exclude_1d and p.ndim <= 1 else 1.0,) for p in params]
            run_kernel(lars_tensor_kernel, params, grads, states,
                       (group["momentum"], np.float64(lr), np.float64(decay),
                        np.float64(group["trust_coefficient"])),
                       param_scalars=adapt, split=False, views=self.kernel_views)
            return
        # Few tensors: pass 1, both squared norms of every adapted tensor (split between the
        # threads); pass 2, the update.
        adapted = [i for i, p in enumerate(params) if p.ndim > 1 or not exclude_1d]
        sums = run_kernel(lars_sums_kernel, [params[i] for i in adapted],
                          [grads[i] for i in adapted], [], ())  # views: other states
        rates: list[tuple[float, float]] = [(0.0, lr)] * len(params)
        for i, (weights, squares) in zip(adapted, sums, strict=True):
            local = lars_local_rate(math.sqrt(weights), math.sqrt(squares), decay,
                                    group["trust_coefficient"])
            rates[i] = (decay, lr * local)
        run_kernel(lars_kernel, params, grads, states, (group["momentum"],),
                   param_scalars=rates, views=self.kernel_views)


class Lars(TorchOptimizer, LarsAlgorithm):
    """:class:`LarsAlgorithm` with named params and state."""

    torch_class = LarsAlgorithm


# ----------------------------------------------------------------------------------- adan
class AdanAlgorithm(ForeachAlgorithm):
    """Adan (Xie et al. 2024, Algorithm 1), see :mod:`optiplug.plugins.optimizers.adan`."""

    state_names = ("exp_avg", "exp_avg_diff", "exp_avg_sq", "previous_grad")
    kernel = adan_kernel

    def __init__(self, params: Any, lr: float = 1e-3,
                 betas: tuple[float, float, float] = (0.98, 0.92, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        check_hyperparameters(lr, betas, weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay})

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        exp_avgs, exp_avg_diffs, exp_avg_sqs, previous = states
        beta1, beta2, beta3 = group["betas"]
        lr, decay = group["lr"], group["weight_decay"]
        if step == 1:
            # The difference of the first step is zero: g_0 = g_1.
            torch._foreach_copy_(previous, grads)
        # g + b2 (g - g_prev), the input of n, in one pass (lerp with the weight -b2), and
        # m_diff = lerp(m_diff, g - g_prev, 1 - b2) = lerp(m_diff, g, 1 - b2) - (1 - b2) g_prev
        # without a tensor of differences: two passes fewer.
        inputs = torch._foreach_lerp(grads, previous, -beta2)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_lerp_(exp_avg_diffs, grads, 1 - beta2)
        torch._foreach_add_(exp_avg_diffs, previous, alpha=-(1 - beta2))
        torch._foreach_mul_(exp_avg_sqs, beta3)
        torch._foreach_addcmul_(exp_avg_sqs, inputs, inputs, value=1 - beta3)
        del inputs
        # p -= lr (m / bc1 + b2 m_diff / bc2) / (sqrt(n / bc3) + eps), with sqrt(bc3) moved
        # into the step size and the two numerators summed first: one addcdiv, no division.
        bc1, bc2, bc3_sqrt = 1 - beta1**step, 1 - beta2**step, math.sqrt(1 - beta3**step)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denominators, group["eps"] * bc3_sqrt)
        numerators = torch._foreach_add(exp_avgs, exp_avg_diffs, alpha=beta2 * bc1 / bc2)
        torch._foreach_addcdiv_(params, numerators, denominators, value=-lr * bc3_sqrt / bc1)
        del numerators, denominators
        if decay:
            torch._foreach_div_(params, 1 + lr * decay)
        torch._foreach_copy_(previous, grads)

    def kernel_scalars(self, group: dict[str, Any], step: int) -> tuple[Any, ...]:
        return adan_scalars(group, step)


class Adan(TorchOptimizer, AdanAlgorithm):
    """:class:`AdanAlgorithm` with named params and state."""

    torch_class = AdanAlgorithm


# ---------------------------------------------------------------------------------- adopt
class AdoptAlgorithm(ForeachAlgorithm):
    """ADOPT (Taniguchi et al. 2024), see :mod:`optiplug.plugins.optimizers.adopt`."""

    state_names = ("exp_avg", "exp_avg_sq")
    kernel = adopt_kernel

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.9999),
                 eps: float = 1e-6, weight_decay: float = 0.0, decoupled: bool = False,
                 clip_exponent: float | None = 0.25) -> None:
        check_hyperparameters(lr, betas, weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay, "decoupled": decoupled,
                                  "clip_exponent": clip_exponent})

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        exp_avgs, exp_avg_sqs = states
        beta1, beta2 = group["betas"]
        lr, decay = group["lr"], group["weight_decay"]
        if decay and not group["decoupled"]:
            grads = torch._foreach_add(grads, params, alpha=decay)
        if step == 1:
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads)
            return
        if decay and group["decoupled"]:
            torch._foreach_mul_(params, 1 - lr * decay)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_clamp_min_(denominators, group["eps"])
        normed = torch._foreach_div(grads, denominators)
        if group["clip_exponent"] is not None:
            clip = (step - 1) ** group["clip_exponent"]
            torch._foreach_clamp_min_(normed, -clip)
            torch._foreach_clamp_max_(normed, clip)
        torch._foreach_lerp_(exp_avgs, normed, 1 - beta1)
        torch._foreach_add_(params, exp_avgs, alpha=-lr)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

    def kernel_scalars(self, group: dict[str, Any], step: int) -> tuple[Any, ...]:
        return adopt_scalars(group, step)


class Adopt(TorchOptimizer, AdoptAlgorithm):
    """:class:`AdoptAlgorithm` with named params and state."""

    torch_class = AdoptAlgorithm


# ------------------------------------------------------------------------------ adabelief
class AdabeliefAlgorithm(ForeachAlgorithm):
    """AdaBelief (Zhuang et al. 2020), see :mod:`optiplug.plugins.optimizers.adabelief`."""

    state_names = ("exp_avg", "exp_avg_var")
    kernel = adabelief_kernel

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-16, weight_decay: float = 0.0, decoupled: bool = True) -> None:
        check_hyperparameters(lr, betas, weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay, "decoupled": decoupled})

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        exp_avgs, exp_avg_vars = states
        beta1, beta2 = group["betas"]
        lr, decay, eps = group["lr"], group["weight_decay"], group["eps"]
        if decay:
            if group["decoupled"]:
                torch._foreach_mul_(params, 1 - lr * decay)
            else:
                grads = torch._foreach_add(grads, params, alpha=decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        residuals = torch._foreach_sub(grads, exp_avgs)
        torch._foreach_mul_(exp_avg_vars, beta2)
        torch._foreach_addcmul_(exp_avg_vars, residuals, residuals, value=1 - beta2)
        torch._foreach_add_(exp_avg_vars, eps)
        bc2_sqrt = math.sqrt(1 - beta2**step)
        del residuals
        denominators = torch._foreach_sqrt(exp_avg_vars)
        torch._foreach_add_(denominators, eps * bc2_sqrt)
        torch._foreach_addcdiv_(params, exp_avgs, denominators,
                                value=-lr * bc2_sqrt / (1 - beta1**step))

    def kernel_scalars(self, group: dict[str, Any], step: int) -> tuple[Any, ...]:
        return adabelief_scalars(group, step)


class Adabelief(TorchOptimizer, AdabeliefAlgorithm):
    """:class:`AdabeliefAlgorithm` with named params and state."""

    torch_class = AdabeliefAlgorithm


# ---------------------------------------------------------------------------- schedule-free
class _ScheduleFree(ForeachAlgorithm):
    """Shared parts: the group scalars, ``eval()`` / ``train()`` and the y/z update."""

    momentum_key: ClassVar[str] = "momentum"
    bias_correction: ClassVar[bool] = False

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        super().__init__(params, {**defaults, "k": 0, "weight_sum": 0.0, "lr_max": -1.0,
                                  "train_mode": True})

    def init_state(self, group: dict[str, Any], param: torch.Tensor,
                   name: str) -> torch.Tensor:
        if name == "z":
            return param.detach().clone(memory_format=torch.preserve_format)
        return super().init_state(group, param, name)

    def _momentum(self, group: dict[str, Any]) -> float:
        value = group[self.momentum_key]
        return float(value[0] if isinstance(value, tuple | list) else value)

    def begin_group(self, group: dict[str, Any]) -> None:
        if not group["train_mode"]:
            raise RuntimeError(f"{type(self).__name__} is in evaluation mode: call train() "
                               f"before step()")
        beta2 = group["betas"][1] if self.bias_correction else None
        self._scalars = advance(group, beta2)

    def _apply(self, group: dict[str, Any], params: Tensors, updates: Tensors,
               zs: Tensors, owned: bool) -> None:
        """``u += wd y;  y = lerp(y, z, c);  y += lr (beta (1 - c) - 1) u;  z -= lr u``."""
        lr, ckp1, _ = self._scalars
        if group["weight_decay"]:
            if owned:
                torch._foreach_add_(updates, params, alpha=group["weight_decay"])
            else:
                updates = torch._foreach_add(updates, params, alpha=group["weight_decay"])
        torch._foreach_lerp_(params, zs, ckp1)
        torch._foreach_add_(params, updates, alpha=lr * (self._momentum(group) * (1 - ckp1) - 1))
        torch._foreach_add_(zs, updates, alpha=-lr)

    @torch.no_grad()
    def eval(self) -> None:
        """Put the averaged weights ``x`` into the parameters (for evaluation)."""
        self._switch(train=False)

    @torch.no_grad()
    def train(self) -> None:
        """Put the training weights ``y`` back into the parameters (before the next step)."""
        self._switch(train=True)

    def _switch(self, train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == train:
                continue
            beta = self._momentum(group)
            weight = 1 - beta if train else 1 - 1 / beta
            params = [p for p in group["params"] if "z" in self.state.get(p, {})]
            if params:
                torch._foreach_lerp_(params, [self.state[p]["z"] for p in params], weight)
            group["train_mode"] = train


class ScheduleFreeAdamWAlgorithm(_ScheduleFree):
    """Schedule-free AdamW, see :mod:`optiplug.plugins.optimizers.schedule_free_adamw`."""

    state_names = ("z", "exp_avg_sq")
    momentum_key = "betas"
    bias_correction = True
    kernel = schedule_free_adamw_kernel

    def __init__(self, params: Any, lr: float = 2.5e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0) -> None:
        check_hyperparameters(lr, betas, weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay, "warmup_steps": warmup_steps,
                                  "r": r, "weight_lr_power": weight_lr_power})

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        zs, exp_avg_sqs = states
        beta2 = group["betas"][1]
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denominators = torch._foreach_div(exp_avg_sqs, self._scalars[2])
        torch._foreach_sqrt_(denominators)
        torch._foreach_add_(denominators, group["eps"])
        updates = torch._foreach_div(grads, denominators)
        del denominators
        self._apply(group, params, updates, zs, owned=True)

    def kernel_scalars(self, group: dict[str, Any], step: int) -> tuple[Any, ...]:
        return schedule_free_adamw_scalars(group, step, self._scalars)


class ScheduleFreeAdamW(TorchOptimizer, ScheduleFreeAdamWAlgorithm):
    """:class:`ScheduleFreeAdamWAlgorithm` with named params and state."""

    torch_class = ScheduleFreeAdamWAlgorithm


class ScheduleFreeSGDAlgorithm(_ScheduleFree):
    """Schedule-free SGD, see :mod:`optiplug.plugins.optimizers.schedule_free_sgd`."""

    state_names = ("z",)
    kernel = schedule_free_sgd_kernel

    def __init__(self, params: Any, lr: float = 1.0, momentum: float = 0.9,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0) -> None:
        check_hyperparameters(lr, (momentum,), weight_decay)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "warmup_steps": warmup_steps, "r": r,
                                  "weight_lr_power": weight_lr_power})

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        (zs,) = states
        self._apply(group, params, grads, zs, owned=False)

    def kernel_scalars(self, group: dict[str, Any], step: int) -> tuple[Any, ...]:
        return schedule_free_sgd_scalars(group, step, self._scalars)


class ScheduleFreeSGD(TorchOptimizer, ScheduleFreeSGDAlgorithm):
    """:class:`ScheduleFreeSGDAlgorithm` with named params and state."""

    torch_class = ScheduleFreeSGDAlgorithm
