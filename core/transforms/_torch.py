"""torch execution of chains: ``xp`` as ``torch._foreach_*`` ops over each group's tensor list.

Imported only when a chain is built for torch (it imports torch). :class:`TorchChainOptimizer`
is a real ``torch.optim.Optimizer`` with optiplug's named params and named state loading
(:class:`~optiplug.backends._torch_optim.NamedParamsOptimizer`), so schedulers, step hooks and
checkpoints work as with any torch optimizer. A step gathers, per param group, the parameters
that have gradients (bucketed by device, dtype and step count, normally one bucket) and runs
each transform once per bucket: one multi-tensor kernel per array operation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import torch

from ..backends._torch_optim import NamedParamsOptimizer
from ..errors import ConfigError
from ._base import (
    Chain,
    MultiTransform,
    PerTensorTransform,
    Ratio,
    ScalarTransform,
    StepContext,
    Transform,
    run_transform,
    settle,
)

__all__ = ["ChainOptimizer", "TorchChainOptimizer", "TorchOps"]

Tensors = list[torch.Tensor] | tuple[torch.Tensor, ...]
_NAN: Final = float("nan")


class TorchOps:
    """:class:`~optiplug.transforms.ArrayOps` over a list of tensors, one foreach call each."""

    __slots__ = ("_owned",)

    def __init__(self) -> None:
        self._owned: list[Tensors] = []

    def _new(self, tensors: Tensors) -> Tensors:
        self._owned.append(tensors)
        return tensors

    def owns(self, a: Tensors) -> bool:
        """Whether ``a`` was made by this step."""
        return any(a is owned for owned in self._owned)

    def writable(self, a: Tensors) -> Tensors:
        return a if self.owns(a) else self.copy(a)

    def ratio(self, a: Tensors, b: Tensors) -> Any:
        return Ratio(a, b)

    def empty_like(self, a: Tensors) -> Tensors:
        return self._new([torch.empty_like(t) for t in a])

    def copy(self, a: Tensors) -> Tensors:
        return self._new(torch._foreach_clone(a))

    def mul(self, a: Tensors, b: Tensors | float) -> Tensors:
        if isinstance(b, (int, float)):
            return self._new(torch._foreach_mul(a, b))
        return self._new(torch._foreach_mul(a, b))

    def add(self, a: Tensors, b: Tensors, alpha: float = 1.0) -> Tensors:
        return self._new(torch._foreach_add(a, b, alpha=alpha))

    def div(self, a: Tensors, b: Tensors, out: Tensors | None = None) -> Tensors:
        return self._new(torch._foreach_div(a, b))

    def sqrt(self, a: Tensors) -> Tensors:
        return self._new(torch._foreach_sqrt(a))

    def copy_(self, a: Tensors, b: Tensors) -> None:
        torch._foreach_copy_(a, b)

    def mul_(self, a: Tensors, b: Tensors | float) -> None:
        if isinstance(b, (int, float)):
            torch._foreach_mul_(a, b)
        else:
            torch._foreach_mul_(a, b)

    def add_(self, a: Tensors, b: Tensors | float, alpha: float = 1.0) -> None:
        if isinstance(b, (int, float)):
            torch._foreach_add_(a, b)
        else:
            torch._foreach_add_(a, b, alpha=alpha)

    def div_(self, a: Tensors, b: Tensors | float) -> None:
        if isinstance(b, (int, float)):
            torch._foreach_div_(a, b)
        else:
            torch._foreach_div_(a, b)

    def lerp_(self, a: Tensors, b: Tensors, weight: float) -> None:
        torch._foreach_lerp_(a, b, weight)

    def addcmul_(self, a: Tensors, b: Tensors, c: Tensors, value: float = 1.0) -> None:
        torch._foreach_addcmul_(a, b, c, value=value)

    def addcdiv_(self, a: Tensors, b: Tensors, c: Tensors, value: float = 1.0) -> None:
        torch._foreach_addcdiv_(a, b, c, value=value)

    def sqrt_(self, a: Tensors) -> None:
        torch._foreach_sqrt_(a)

    def maximum_(self, a: Tensors, b: Tensors) -> None:
        torch._foreach_maximum_(a, b)

    def sign_(self, a: Tensors) -> None:
        torch._foreach_sign_(a)

    def abs_(self, a: Tensors) -> None:
        torch._foreach_abs_(a)

    def clamp_(self, a: Tensors, low: float, high: float) -> None:
        torch._foreach_clamp_min_(a, low)
        torch._foreach_clamp_max_(a, high)

    def sum_of_squares(self, a: Tensors) -> float:
        if not a:
            return 0.0
        norms = torch.stack([n.double() for n in torch._foreach_norm(a)])
        return float(norms.square().sum())


class _Bucket:
    """Parameters of one group with gradients and the same device, dtype and step."""

    __slots__ = ("ctx", "grads", "params", "states", "u", "xp")

    def __init__(self, group: Mapping[str, Any], step: int, width: int) -> None:
        self.params: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.u: Tensors = self.grads
        self.states: list[list[torch.Tensor]] = [[] for _ in range(width)]
        self.ctx = StepContext(self.params, step, group)
        self.xp = TorchOps()


class ChainOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` running a chain (or one chain per label) of transforms.

    Args:
        params: Tensors, named tensors or param groups; a group may carry ``"label"`` (which
            chain of a :class:`~optiplug.transforms.MultiTransform`) and ``"weight_decay"``
            (overrides ``add_decayed_weights`` for the group).
        transform: A chain or a :class:`~optiplug.transforms.MultiTransform`.
        lr: Default learning rate (read by ``scale_by_learning_rate``).
    """

    def __init__(self, params: Any, transform: Chain | MultiTransform, lr: float = 1e-3
                 ) -> None:
        self.transform = (transform if isinstance(transform, MultiTransform)
                          else MultiTransform({"default": transform}))
        self._entries: dict[str, list[tuple[Transform, int, int, bool]]] = {}
        self._initial: dict[str, list[tuple[str, float]]] = {}
        for label, chain in self.transform.chains.items():
            position = 0
            entries: list[tuple[Transform, int, int, bool]] = []
            initial: list[tuple[str, float]] = []
            for item, keys in zip(chain.transforms, chain.state_keys, strict=True):
                entries.append((item, position, position + len(keys),
                                isinstance(item, ScalarTransform)))
                position += len(keys)
                initial.extend((key, item.initial_value(state_name))
                               for key, state_name in zip(keys, item.state_names, strict=True))
            self._entries[label] = entries
            self._initial[label] = initial
        self._unnamed = 0
        super().__init__(params, {"lr": lr, "weight_decay": None, "label": None})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, split into one group per label of its parameters."""
        params = param_group["params"]
        items = [params] if isinstance(params, torch.Tensor) else list(params)
        by_label: dict[str, list[Any]] = {}
        for item in items:
            if isinstance(item, tuple):
                name, tensor = item
            else:
                name, tensor = str(self._unnamed), item
                self._unnamed += 1
            label = self.transform.label_of(name, tensor, param_group.get("label"))
            by_label.setdefault(label, []).append(item)
        for label, members in by_label.items():
            super().add_param_group({**param_group, "params": members, "label": label})

    def chain_of(self, group: Mapping[str, Any]) -> Chain:
        """The chain that updates the parameters of ``group``."""
        return self.transform.chains[group["label"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:
        """One step of every group's chain."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        runs: dict[str, list[_Bucket]] = {}
        for group in self.param_groups:
            label = group["label"]
            initial = self._initial[label]
            width = len(initial)
            buckets: dict[tuple[Any, ...], _Bucket] = {}
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise ConfigError("chain optimizers do not support sparse gradients")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    for state_key, value in initial:
                        state[state_key] = (
                            torch.zeros_like(param, memory_format=torch.preserve_format)
                            if value == 0.0 else torch.full_like(param, value))
                state["step"] += 1
                bucket_key = (param.device, param.dtype, state["step"])
                bucket = buckets.get(bucket_key)
                if bucket is None:
                    bucket = buckets[bucket_key] = _Bucket(group, state["step"], width)
                bucket.params.append(param)
                bucket.grads.append(grad)
                for slot, (name, _) in zip(bucket.states, initial, strict=True):
                    slot.append(state[name])
            runs.setdefault(label, []).extend(buckets.values())
        for label, label_buckets in runs.items():
            _run(self._entries[label], label_buckets)
        return loss

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state dict by parameter name (see ``NamedParamsOptimizer``).

        Raises:
            ConfigError: the saved state belongs to another chain (other state arrays), or
                anything ``NamedParamsOptimizer`` rejects.
        """
        groups = state_dict.get("param_groups", []) if isinstance(state_dict, Mapping) else []
        states = state_dict.get("state", {}) if isinstance(state_dict, Mapping) else {}
        for index, group in enumerate(groups):
            label = group.get("label")
            if label not in self._initial:
                raise ConfigError(f"cannot load optimizer state: saved group {index} uses "
                                  f"chain {label!r}, this optimizer has {sorted(self._initial)}")
            expected = {"step", *(key for key, _ in self._initial[label])}
            for param_id in group.get("params", ()):
                entry = states.get(param_id)
                if isinstance(entry, Mapping) and set(entry) != expected:
                    raise ConfigError(f"cannot load optimizer state: a parameter of group "
                                      f"{index} has state {sorted(entry)}, this chain keeps "
                                      f"{sorted(expected)}")
        super().load_state_dict(state_dict)  # type: ignore[arg-type]


def _run(entries: Sequence[tuple[Transform, int, int, bool]], buckets: list[_Bucket]) -> None:
    for item, low, high, scalar in entries:
        if isinstance(item, PerTensorTransform):
            for bucket in buckets:
                _scale_per_tensor(item, bucket)
            continue
        if scalar:
            assert isinstance(item, ScalarTransform)
            norm = _NAN
            if item.needs_norm:
                for bucket in buckets:
                    bucket.u = settle(bucket.xp, bucket.u, bucket.ctx, keep_scale=True)
                norm = math.sqrt(math.fsum(
                    b.ctx.scale * b.ctx.scale * b.xp.sum_of_squares(b.u) for b in buckets))
            for bucket in buckets:
                bucket.ctx.scale *= item.factor(bucket.ctx, norm)
            continue
        for bucket in buckets:
            bucket.u = run_transform(item, bucket.xp, bucket.u, bucket.states[low:high],
                                     bucket.ctx)
    for bucket in buckets:
        _apply_update(bucket.params, bucket.u, bucket.ctx)


def _scale_per_tensor(item: PerTensorTransform, bucket: _Bucket) -> None:
    """Multiply each tensor's update by ``item``'s factor from its own norms (one sync)."""
    u = settle(bucket.xp, bucket.u, bucket.ctx)
    if not u:
        return
    norms = torch.stack([n.double().cpu() for n in (*torch._foreach_norm(bucket.params),
                                                    *torch._foreach_norm(u))]).tolist()
    count = len(bucket.params)
    ctx = StepContext(None, bucket.ctx.step, bucket.ctx.group)
    factors = [item.tensor_factor(ctx, param_norm, update_norm)
               for param_norm, update_norm in zip(norms[:count], norms[count:], strict=True)]
    u = bucket.xp.writable(u)
    torch._foreach_mul_(u, factors)
    bucket.u = u


def _apply_update(params: list[torch.Tensor], u: Any, ctx: StepContext) -> None:
    """``params += scale * (u + params_coef * params)`` with foreach kernels."""
    scale = ctx.scale
    if ctx.params_coef != 0.0:
        torch._foreach_mul_(params, 1.0 + scale * ctx.params_coef)
    if isinstance(u, Ratio):
        torch._foreach_addcdiv_(params, u.num, u.den, scale)
    else:
        torch._foreach_add_(params, u, alpha=scale)


class TorchChainOptimizer(NamedParamsOptimizer, ChainOptimizer):
    """:class:`ChainOptimizer` with named params, named state loading and ``nonfinite``."""

    torch_class = ChainOptimizer
