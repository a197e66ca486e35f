"""torch optimizers of ``yogi``, ``sgdw``, ``soap`` and the ``sam`` wrapper.

Imported only by their torch builders (it imports torch). Each ``<Name>Algorithm`` is a plain
``torch.optim.Optimizer`` whose step runs multi-tensor ``torch._foreach_*`` kernels over the
parameters of a group that have a gradient (a ``None`` grad skips the parameter, its state and
its step count, as in ``torch.optim``); each ``<Name>`` adds
:class:`optiplug.backends.torch.TorchOptimizer` (named params, state by name, ``nonfinite``).
The math and its conventions are documented in each technique's plugin module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

from optiplug.backends.torch import TorchOptimizer
from optiplug.plugins.optimizers.paper_torch import ForeachAlgorithm, check_hyperparameters
from optiplug.plugins.optimizers.sam import group_rho
from optiplug.plugins.optimizers.sgdw import sgdw_kernel, sgdw_scalars
from optiplug.plugins.optimizers.soap import preconditioned_axes, refuse_high_rank
from optiplug.plugins.optimizers.wrapping_torch import TorchWrapper, foreach_groups
from optiplug.plugins.optimizers.yogi import yogi_kernel, yogi_scalars

__all__ = ["SGDW", "SGDWAlgorithm", "Sam", "Soap", "SoapAlgorithm", "Yogi", "YogiAlgorithm"]

Tensors = list[torch.Tensor]


# ----------------------------------------------------------------------------------- yogi
class YogiAlgorithm(ForeachAlgorithm):
    """Yogi (Zaheer et al. 2018), see :mod:`optiplug.plugins.optimizers.yogi`."""

    state_names = ("exp_avg", "exp_avg_sq")
    kernel = yogi_kernel

    def __init__(self, params: Any, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-3, initial_accumulator: float = 1e-6,
                 weight_decay: float = 0.0, decoupled: bool = True) -> None:
        check_hyperparameters(lr, betas, weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "initial_accumulator": initial_accumulator,
                                  "weight_decay": weight_decay, "decoupled": decoupled})

    def init_state(self, group: dict[str, Any], param: torch.Tensor,
                   name: str) -> torch.Tensor:
        return torch.full_like(param, group["initial_accumulator"],
                               memory_format=torch.preserve_format)

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        exp_avgs, exp_avg_sqs = states
        beta1, beta2 = group["betas"]
        lr, decay = group["lr"], group["weight_decay"]
        if decay:
            if group["decoupled"]:
                torch._foreach_mul_(params, 1 - lr * decay)
            else:
                grads = torch._foreach_add(grads, params, alpha=decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        squares = torch._foreach_mul(grads, grads)
        signs = torch._foreach_sub(exp_avg_sqs, squares)
        torch._foreach_sign_(signs)
        torch._foreach_addcmul_(exp_avg_sqs, signs, squares, value=-(1 - beta2))
        del signs, squares
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, math.sqrt(1 - beta2**step))
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denominators, value=-lr / (1 - beta1**step))

    def kernel_scalars(self, group: dict[str, Any], step: int) -> tuple[Any, ...]:
        return yogi_scalars(group, step)


class Yogi(TorchOptimizer, YogiAlgorithm):
    """:class:`YogiAlgorithm` with named params and state."""

    torch_class = YogiAlgorithm


# ----------------------------------------------------------------------------------- sgdw
class SGDWAlgorithm(ForeachAlgorithm):
    """SGDW (Loshchilov & Hutter 2019), see :mod:`optiplug.plugins.optimizers.sgdw`."""

    state_names = ("momentum_buffer",)
    kernel = sgdw_kernel

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        check_hyperparameters(lr, (momentum,), weight_decay)
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    def update(self, group: dict[str, Any], step: int, params: Tensors, grads: Tensors,
               states: Sequence[Tensors]) -> None:
        (buffers,) = states
        lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
        if decay:
            torch._foreach_mul_(params, 1 - lr * decay)
        direction = grads
        if momentum:
            if step == 1:
                torch._foreach_copy_(buffers, grads)
            else:
                torch._foreach_mul_(buffers, momentum)
                torch._foreach_add_(buffers, grads, alpha=1 - group["dampening"])
            direction = (torch._foreach_add(grads, buffers, alpha=momentum)
                         if group["nesterov"] else buffers)
        torch._foreach_add_(params, direction, alpha=-lr)

    def kernel_scalars(self, group: dict[str, Any], step: int) -> tuple[Any, ...]:
        return sgdw_scalars(group, step)


class SGDW(TorchOptimizer, SGDWAlgorithm):
    """:class:`SGDWAlgorithm` with named params and state."""

    torch_class = SGDWAlgorithm


# ------------------------------------------------------------------------------------ sam
class Sam(TorchWrapper):
    """SAM around a torch optimizer, see :mod:`optiplug.plugins.optimizers.sam`."""

    requires_closure: ClassVar[bool] = True

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perturb, re-evaluate the closure, restore, then step the base optimizer.

        Returns:
            The closure's loss at the unperturbed parameters.

        Raises:
            TypeError: no closure.
            RuntimeError: in evaluation mode.
        """
        if self.evaluating:
            raise RuntimeError("Sam is in evaluation mode: call train() before step()")
        if closure is None:
            raise TypeError("Sam.step() needs a closure that zeroes the grads, computes the "
                            "loss, calls backward() and returns the loss")
        with torch.enable_grad():
            loss = closure()
        if self.nonfinite != "ignore" and not self._grads_finite():
            self.skipped_steps += 1
            return loss
        params = [p for _, p in self._keys() if p.grad is not None]
        adaptive, eps = self.options["adaptive"], self.options["eps"]
        if params:
            grads = [p.grad for p in params]
            scaled = torch._foreach_mul(grads, torch._foreach_abs(params)) if adaptive else grads
            norm = torch.stack(torch._foreach_norm(scaled)).norm() + eps
            del scaled
        saved: dict[torch.Tensor, torch.Tensor] = {}
        for index, group in enumerate(self.param_groups):
            members = [p for p in group["params"] if p.grad is not None]
            scale = group_rho(self.options, index) / norm if members else None
            for indices in foreach_groups(members).values():
                tensors = [members[i] for i in indices]
                for p in tensors:
                    saved[p] = p.clone()
                grads = [p.grad for p in tensors]
                if adaptive:
                    steps = torch._foreach_mul(tensors, tensors)
                    torch._foreach_mul_(steps, grads)
                else:
                    steps = torch._foreach_mul(grads, 1.0)
                torch._foreach_mul_(steps, scale.to(tensors[0]))  # type: ignore[union-attr]
                torch._foreach_add_(tensors, steps)
        try:
            with torch.enable_grad():
                closure()
        finally:
            if saved:
                torch._foreach_copy_(list(saved), list(saved.values()))
        if self.nonfinite != "ignore" and not self._grads_finite():
            self.skipped_steps += 1
            return loss
        skipped = getattr(self.base, "skipped_steps", 0)
        with torch.enable_grad():
            self.base.step()
        if getattr(self.base, "skipped_steps", 0) == skipped:
            self.steps += 1
        return loss


# ----------------------------------------------------------------------------------- soap
SOAP_BATCH_NUMEL = 1 << 18
"""On CPU, at most this many elements (at least one tensor) are stacked into one batch of
SOAP's matrix products: a batch's stacked tensors (1 MiB each in float32) stay in a core's L2
cache through the step's chain of products (measured on 2 threads: the eight products of 100
matrices of 100 x 100 in batches of 10 to 25 took 0.7-0.8x the time of one batch of 100, and
alike for 200 x 200), and its temporaries stay small."""
SOAP_DEVICE_BATCH_NUMEL = 1 << 22
"""The same on other devices (CUDA): larger batches, fewer kernel launches."""


def _rotate(batch: torch.Tensor, bases: Sequence[torch.Tensor | None],
            forward: bool) -> torch.Tensor:
    """Each tensor of ``batch`` (stacked on axis 0) rotated axis by axis: by ``Q^T`` (forward)
    or ``Q`` (back) where an axis has a basis ``Q`` (stacked alike), as is where it has none."""
    if all(basis is None for basis in bases):
        return batch
    size = batch.shape[0]
    for basis in bases:
        # The tensor's first axis goes last (its other axes stay in order and merge into one
        # without a copy), is contracted with the basis, and the result keeps it last.
        batch = batch.movedim(1, -1)
        if basis is not None:
            shape = batch.shape
            batch = torch.matmul(batch.reshape(size, -1, shape[-1]),
                                 basis if forward else basis.mT).reshape(shape)
    return batch


def _factor(grads: torch.Tensor, axis: int) -> torch.Tensor:
    """``G G^T`` over every axis but ``axis`` of each stacked gradient: ``(batch, d, d)``."""
    rows = grads.movedim(axis + 1, 1)
    rows = rows.reshape(rows.shape[0], rows.shape[1], -1)
    return torch.matmul(rows, rows.mT)


class SoapAlgorithm(torch.optim.Optimizer):
    """SOAP (Vyas et al. 2024), see :mod:`optiplug.plugins.optimizers.soap`.

    The parameters of a group that share device, dtype, shape and step count are stacked (on
    CPU in batches of at most :data:`SOAP_BATCH_NUMEL` elements): their rotations into and out
    of the eigenbases and their Kronecker factors are batched matrix products, their moments
    and factors are updated by multi-tensor ``torch._foreach_*`` kernels, and their eigenbases
    are computed by batched ``eigh`` and QR (``geqrf``, ``householder_product``). The state
    stays one tensor per parameter.
    """

    def __init__(self, params: Any, lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.95),
                 shampoo_beta: float | None = None, eps: float = 1e-8,
                 weight_decay: float = 0.01, precondition_frequency: int = 10,
                 max_precondition_dim: int = 10000, precondition_1d: bool = False,
                 correct_bias: bool = True) -> None:
        check_hyperparameters(lr, betas, weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "shampoo_beta": shampoo_beta,
                                  "eps": eps, "weight_decay": weight_decay,
                                  "precondition_frequency": precondition_frequency,
                                  "max_precondition_dim": max_precondition_dim,
                                  "precondition_1d": precondition_1d,
                                  "correct_bias": correct_bias})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``; nothing is added if a parameter has more than 4
        dimensions (raises ``ValueError``)."""
        super().add_param_group(param_group)
        refuse_high_rank(self.param_groups)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step over every parameter that has a gradient (a sparse gradient raises
        ``RuntimeError`` before anything changes)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and param.grad.is_sparse:
                    raise RuntimeError("Soap does not support sparse gradients")
        for group in self.param_groups:
            buckets: dict[tuple[Any, ...], list[torch.Tensor]] = {}
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    self._init_state(group, param, state)
                state["step"] += 1
                key = (param.device, param.dtype, tuple(param.shape), state["step"])
                buckets.setdefault(key, []).append(param)
            for (device, _, shape, step), params in buckets.items():
                axes = preconditioned_axes(shape, group["max_precondition_dim"],
                                           group["precondition_1d"])
                limit = SOAP_BATCH_NUMEL if device.type == "cpu" else SOAP_DEVICE_BATCH_NUMEL
                per_batch = max(1, limit // max(1, math.prod(shape)))
                for start in range(0, len(params), per_batch):
                    self._update(group, params[start:start + per_batch], axes, step - 1)
        return loss

    @staticmethod
    def _init_state(group: dict[str, Any], param: torch.Tensor, state: dict[str, Any]) -> None:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        for axis, used in enumerate(preconditioned_axes(
                tuple(param.shape), group["max_precondition_dim"], group["precondition_1d"])):
            if used:
                size = param.shape[axis]
                state[f"GG{axis}"] = param.new_zeros((size, size))
                state[f"Q{axis}"] = param.new_zeros((size, size))

    def _update(self, group: dict[str, Any], params: Tensors, axes: list[bool],
                updates: int) -> None:
        """One step of ``params`` (same device, dtype, shape and step count), whose update
        count is ``updates`` (0: the first step, which only builds the eigenbases)."""
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        stacked = torch.stack(grads)  # type: ignore[arg-type]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        if updates:
            beta1, beta2 = group["betas"]
            exp_avgs = [state["exp_avg"] for state in states]
            bases = [torch.stack([state[f"Q{axis}"] for state in states]) if used else None
                     for axis, used in enumerate(axes)]
            projected = _rotate(stacked, bases, forward=True)
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # type: ignore[arg-type]
            torch._foreach_lerp_(exp_avg_sqs, list((projected * projected).unbind(0)),
                                 1 - beta2)
            denominators = torch.stack(exp_avg_sqs).sqrt_().add_(group["eps"])
            directions = _rotate(_rotate(torch.stack(exp_avgs), bases, forward=True)
                                 .div_(denominators), bases, forward=False)
            step_size = group["lr"]
            if group["correct_bias"]:
                step_size *= math.sqrt(1 - beta2**updates) / (1 - beta1**updates)
            torch._foreach_add_(params, list(directions.unbind(0)), alpha=-step_size)
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        shampoo_beta = group["shampoo_beta"]
        if shampoo_beta is None:
            shampoo_beta = group["betas"][1]
        used_axes = [axis for axis, used in enumerate(axes) if used]
        for axis in used_axes:
            torch._foreach_lerp_([state[f"GG{axis}"] for state in states],
                                 list(_factor(stacked, axis).unbind(0)), 1 - shampoo_beta)
        if not used_axes or (updates and updates % group["precondition_frequency"]):
            return
        # The eigenbases: eigh of the factors on the first step, then every f-th update one
        # power iteration and a QR, with the axes of exp_avg_sq sorted alike; in float64.
        exp_avg_sq = torch.stack(exp_avg_sqs)
        for axis in used_axes:
            factors = torch.stack([state[f"GG{axis}"] for state in states]).double()
            if not updates:
                eye = torch.eye(factors.shape[-1], dtype=factors.dtype, device=factors.device)
                basis = torch.linalg.eigh(factors + 1e-30 * eye)[1].flip(-1)
            else:
                basis = torch.stack([state[f"Q{axis}"] for state in states]).double()
                product = factors @ basis
                order = torch.argsort((basis * product).sum(dim=1), dim=-1, descending=True,
                                      stable=True)
                shape = [1] * exp_avg_sq.dim()
                shape[0], shape[axis + 1] = order.shape
                exp_avg_sq = exp_avg_sq.gather(axis + 1,
                                               order.view(shape).expand_as(exp_avg_sq))
                # Q of the QR (LAPACK's geqrf and orgqr, as torch.linalg.qr) without its R.
                basis = torch.linalg.householder_product(*torch.geqrf(
                    product.gather(2, order.unsqueeze(1).expand_as(product))))
            torch._foreach_copy_([state[f"Q{axis}"] for state in states],
                                 list(basis.unbind(0)))
        if updates:
            torch._foreach_copy_(exp_avg_sqs, list(exp_avg_sq.unbind(0)))


class Soap(TorchOptimizer, SoapAlgorithm):
    """:class:`SoapAlgorithm` with named params and state."""

    torch_class = SoapAlgorithm

    def state_shape(self, key: str, param: torch.Tensor) -> tuple[int, ...]:
        """``(d, d)`` for the factor and basis of an axis of length ``d``."""
        if key.startswith(("GG", "Q")):
            size = param.shape[int(key[-1])]
            return (size, size)
        return tuple(param.shape)
