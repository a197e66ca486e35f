"""NumPy execution of chains: ``xp`` as ufuncs on cache-sized blocks, in place.

:class:`NumpyChainOptimizer` is a :class:`~optiplug.backends.numpy.NumpyOptimizer`: param
groups, named state, ``state_dict``, step hooks, threads and the blocked loop come from the
base. Its kernel runs the whole chain on one block of one parameter at a time, so every
temporary is a scratch block that stays in cache and a step allocates nothing that grows with
the parameters. A global norm (``clip_by_global_norm``) taken before any array kernel is a
read-only pre-pass over the gradients; one taken after an array kernel splits the chain into
stages, and the updates between stages are kept in one buffer per parameter. A per-tensor
transform (``scale_by_trust_ratio``) also starts a stage: the norms of each whole parameter and
of its update so far are taken before its factor is applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ..backends._numpy_optim import Nonfinite, NumpyOptimizer
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

__all__ = ["NumpyChainOptimizer", "NumpyOps"]

Array = NDArray[Any]
_NAN: Final = float("nan")
# (transform, first state index, last state index + 1, is scalar)
Entry = tuple[Transform, int, int, bool]


class NumpyOps:
    """:class:`~optiplug.transforms.ArrayOps` over one NumPy block, writing into scratch.

    Scratch blocks come from the optimizer (reused every block); when a chain needs more than
    it was given, further ones are allocated for that block only.
    """

    __slots__ = ("_free", "_owned")

    def __init__(self, scratch: Sequence[Array]) -> None:
        self._free = list(scratch)
        self._owned: list[Array] = []

    def _take(self, like: Array) -> Array:
        return self._free.pop() if self._free else np.empty_like(like)

    def _new(self, like: Array) -> Array:
        block = self._take(like)
        self._owned.append(block)
        return block

    def owns(self, a: Array) -> bool:
        """Whether ``a`` is scratch of this block."""
        # A plain loop: any() with a generator costs more on this per-block path.
        for block in self._owned:  # noqa: SIM110
            if a is block:
                return True
        return False

    def writable(self, a: Array) -> Array:
        if self.owns(a):
            return a
        return self.copy(a)

    def empty_like(self, a: Array) -> Array:
        return self._new(a)

    def ratio(self, a: Array, b: Array) -> Any:
        return Ratio(a, b)

    def copy(self, a: Array) -> Array:
        out = self._new(a)
        np.copyto(out, a)
        return out

    def mul(self, a: Array, b: Array | float) -> Array:
        out = self._new(a)
        np.multiply(a, b, out=out)
        return out

    def add(self, a: Array, b: Array, alpha: float = 1.0) -> Array:
        out = self._new(a)
        if alpha == 1.0:
            np.add(a, b, out=out)
        else:
            np.multiply(b, alpha, out=out)
            np.add(out, a, out=out)
        return out

    def div(self, a: Array, b: Array, out: Array | None = None) -> Array:
        if out is None or not self.owns(out):
            out = self._new(a)
        np.divide(a, b, out=out)
        return out

    def sqrt(self, a: Array) -> Array:
        out = self._new(a)
        np.sqrt(a, out=out)
        return out

    def copy_(self, a: Array, b: Array) -> None:
        np.copyto(a, b)

    def mul_(self, a: Array, b: Array | float) -> None:
        np.multiply(a, b, out=a)

    def add_(self, a: Array, b: Array | float, alpha: float = 1.0) -> None:
        if alpha == 1.0 or not isinstance(b, np.ndarray):
            np.add(a, b, out=a)
            return
        tmp = self._take(a)
        np.multiply(b, alpha, out=tmp)
        np.add(a, tmp, out=a)
        self._free.append(tmp)

    def div_(self, a: Array, b: Array | float) -> None:
        np.divide(a, b, out=a)

    def lerp_(self, a: Array, b: Array, weight: float) -> None:
        tmp = self._take(a)
        np.multiply(b, weight, out=tmp)
        np.multiply(a, 1.0 - weight, out=a)
        np.add(a, tmp, out=a)
        self._free.append(tmp)

    def addcmul_(self, a: Array, b: Array, c: Array, value: float = 1.0) -> None:
        tmp = self._take(a)
        np.multiply(b, value, out=tmp)
        np.multiply(tmp, c, out=tmp)
        np.add(a, tmp, out=a)
        self._free.append(tmp)

    def addcdiv_(self, a: Array, b: Array, c: Array, value: float = 1.0) -> None:
        tmp = self._take(a)
        np.divide(b, c, out=tmp)
        np.multiply(tmp, value, out=tmp)
        np.add(a, tmp, out=a)
        self._free.append(tmp)

    def sqrt_(self, a: Array) -> None:
        np.sqrt(a, out=a)

    def maximum_(self, a: Array, b: Array) -> None:
        np.maximum(a, b, out=a)

    def sign_(self, a: Array) -> None:
        np.sign(a, out=a)

    def abs_(self, a: Array) -> None:
        np.abs(a, out=a)

    def clamp_(self, a: Array, low: float, high: float) -> None:
        np.clip(a, low, high, out=a)

    def sum_of_squares(self, a: Array) -> float:
        return float(np.dot(a, a))


def _sum_of_squares(flat: Array, block: int) -> float:
    # float32 dot products stay accurate within a block; blocks are summed in float64.
    return math.fsum(float(np.dot(flat[i:i + block], flat[i:i + block]))
                     for i in range(0, flat.size, block))


class NumpyChainOptimizer(NumpyOptimizer):
    """A NumPy optimizer running a chain (or one chain per label) of transforms.

    Args:
        params: Anything :class:`~optiplug.backends.numpy.NumpyOptimizer` takes; a group may
            carry ``"label"`` (which chain of a :class:`~optiplug.transforms.MultiTransform`)
            and ``"weight_decay"`` (overrides ``add_decayed_weights`` for the group).
        transform: A chain, or a :class:`~optiplug.transforms.MultiTransform`.
        lr: Default learning rate of the groups (read by ``scale_by_learning_rate``).
        nonfinite, block_size, threads: As for :class:`~optiplug.backends.numpy.NumpyOptimizer`.
        **clipping: ``clip_grad_norm``, ``clip_grad_norm_type``, ``clip_grad_value``, as for
            :class:`~optiplug.backends.numpy.NumpyOptimizer`.
    """

    scratch_blocks = 4

    def __init__(self, params: Any, transform: Chain | MultiTransform, *, lr: float = 1e-3,
                 nonfinite: Nonfinite = "ignore", block_size: int | None = None,
                 threads: int | None = None, **clipping: Any) -> None:
        self.transform = (transform if isinstance(transform, MultiTransform)
                          else MultiTransform({"default": transform}))
        self._programs: dict[str, list[Entry]] = {}
        self._initial: dict[str, dict[str, float]] = {}
        for label, chain in self.transform.chains.items():
            entries: list[Entry] = []
            position = 0
            initial: dict[str, float] = {}
            for item, keys in zip(chain.transforms, chain.state_keys, strict=True):
                entries.append((item, position, position + len(keys),
                                isinstance(item, (ScalarTransform, PerTensorTransform))))
                position += len(keys)
                for key, state_name in zip(keys, item.state_names, strict=True):
                    initial[key] = item.initial_value(state_name)
            self._programs[label] = entries
            self._initial[label] = initial
        self._staged = any(chain.needs_staging() for chain in self.transform.chains.values())
        self._norms: dict[tuple[str, int], float] = {}
        self._carry: dict[str, Array] = {}
        self._stage_scratch: dict[np.dtype[Any], list[Array]] = {}
        super().__init__(params, {"lr": lr, "weight_decay": None, "label": None},
                         nonfinite=nonfinite, block_size=block_size, threads=threads,
                         **clipping)

    # ---------------------------------------------------------------- groups and state
    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group, split into one group per label of its parameters."""
        super().add_param_group(param_group)
        group = self.param_groups.pop()
        by_label: dict[str, list[int]] = {}
        for index, (name, param) in enumerate(zip(group["param_names"], group["params"],
                                                  strict=True)):
            label = self.transform.label_of(name, param, group.get("label"))
            by_label.setdefault(label, []).append(index)
        for label, indices in by_label.items():
            self.param_groups.append({**group, "label": label,
                                      "params": [group["params"][i] for i in indices],
                                      "param_names": [group["param_names"][i] for i in indices]})

    def state_keys_for(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(self._initial_of(group))

    def initial_state_value(self, group: Mapping[str, Any], key: str) -> float:
        return self._initial_of(group)[key]

    def _initial_of(self, group: Mapping[str, Any]) -> dict[str, float]:
        initial = self._initial.get(group.get("label"))  # type: ignore[arg-type]
        if initial is None:
            raise ConfigError(f"cannot load optimizer state: a group uses chain "
                              f"{group.get('label')!r}, this optimizer has "
                              f"{sorted(self._initial)}")
        return initial

    def chain_of(self, group: Mapping[str, Any]) -> Chain:
        """The chain that updates the parameters of ``group``."""
        return self.transform.chains[group["label"]]

    # --------------------------------------------------------------------------- steps
    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        label = group["label"]
        entries = self._programs[label]
        return entries, self._factors(label, entries, group, state["step"]), state["step"], \
            group

    def _factors(self, label: str, entries: list[Entry], group: Mapping[str, Any],
                 step: int, tensor_norms: Mapping[int, tuple[float, float]] | None = None
                 ) -> tuple[float, ...]:
        ctx = StepContext(None, step, group)
        factors = []
        for index, (item, _, _, scalar) in enumerate(entries):
            if isinstance(item, PerTensorTransform):
                norms = (tensor_norms or {}).get(index)
                factors.append(1.0 if norms is None else item.tensor_factor(ctx, *norms))
            elif scalar:
                assert isinstance(item, ScalarTransform)
                factors.append(item.factor(ctx, self._norms.get((label, index), _NAN)))
            else:
                factors.append(1.0)
        return tuple(factors)

    def update(self, param: Array, grad: Array, state: Sequence[Array],
               scratch: Sequence[Array], scalars: Any) -> None:
        entries, factors, step, group = scalars
        xp = NumpyOps(scratch)
        u, ctx = _run(xp, entries, factors, param, grad, state, step, group)
        _apply_update(xp, param, u, ctx)

    def _apply(self, work: list[tuple[dict[str, Any], str, Array, Array]],
               source: Any = None) -> None:
        if self._staged:
            self._apply_staged(work)
            return
        self._norms = self._leading_norms(work)
        # No source: the norms change every step, so no step reuses another's plan.
        super()._apply(work)

    def _leading_norms(self, work: list[tuple[dict[str, Any], str, Array, Array]]
                       ) -> dict[tuple[str, int], float]:
        """Norms wanted before any array kernel: from the gradients and the scalars before."""
        norms: dict[tuple[str, int], float] = {}
        labels = {group["label"] for group, _, _, _ in work}
        for label in labels:
            entries = self._programs[label]
            if not any(item.needs_norm for item, _, _, scalar in entries if scalar
                       and isinstance(item, ScalarTransform)):
                continue
            items = [(group, _sum_of_squares(grad.reshape(-1), self.block_size),
                      self.state.get(name, {}).get("step", 0) + 1)
                     for group, name, _, grad in work if group["label"] == label]
            scales = [1.0] * len(items)
            for index, (item, _, _, scalar) in enumerate(entries):
                if not scalar:
                    break
                assert isinstance(item, ScalarTransform)
                norm = _NAN
                if item.needs_norm:
                    norm = math.sqrt(math.fsum(s * s * sq for s, (_, sq, _) in
                                               zip(scales, items, strict=True)))
                    norms[(label, index)] = norm
                for position, (group, _, step) in enumerate(items):
                    scales[position] *= item.factor(StepContext(None, step, group), norm)
        return norms

    def _apply_staged(self, work: list[tuple[dict[str, Any], str, Array, Array]]) -> None:
        """Run stage by stage; the updates between stages live in one buffer per parameter."""
        size = self.block_size
        self._norms = {}
        tasks = []
        for group, name, param, grad in work:
            keys = self.state_keys_for(group)
            state = self.state.get(name)
            if state is None:
                state = self.state[name] = {"step": 0}
                for key in keys:
                    value = self.initial_state_value(group, key)
                    state[key] = np.zeros_like(param) if value == 0.0 else \
                        np.full_like(param, value)
            state["step"] += 1
            tasks.append([group, name, param.reshape(-1), grad.reshape(-1),
                          [state[key].reshape(-1) for key in keys],
                          self._programs[group["label"]], state["step"]])
        for label in {task[0]["label"] for task in tasks}:
            mine = [task for task in tasks if task[0]["label"] == label]
            stages = self.transform.chains[label].stages()
            for number, (start, stop) in enumerate(stages):
                last = number == len(stages) - 1
                entries = mine[0][5]
                head = entries[start][0]
                if isinstance(head, ScalarTransform) and head.needs_norm:
                    self._norms[(label, start)] = math.sqrt(math.fsum(
                        _sum_of_squares(task[3], size) for task in mine))
                for task in mine:
                    group, name, flat_p, source, arrays, entries, step = task
                    tensor_norms = None
                    if isinstance(head, PerTensorTransform):
                        tensor_norms = {start: (
                            math.sqrt(_sum_of_squares(flat_p, size)),
                            math.sqrt(_sum_of_squares(source, size)))}
                    factors = self._factors(label, entries, group, step, tensor_norms)
                    sink = None if last else self._carry_for(name, flat_p)
                    scratch = self._stage_scratch_for(flat_p.dtype)
                    for begin in range(0, flat_p.size, size):
                        end = min(begin + size, flat_p.size)
                        xp = NumpyOps([s[:end - begin] for s in scratch])
                        u, ctx = _run(xp, entries[start:stop], factors[start:stop],
                                      flat_p[begin:end], source[begin:end],
                                      [a[begin:end] for a in arrays], step, group)
                        if sink is None:
                            _apply_update(xp, flat_p[begin:end], u, ctx)
                        else:
                            np.copyto(sink[begin:end], settle(xp, u, ctx))
                    task[3] = sink

    def _stage_scratch_for(self, dtype: np.dtype[Any]) -> list[Array]:
        scratch = self._stage_scratch.get(dtype)
        if scratch is None:
            scratch = self._stage_scratch[dtype] = list(
                np.empty((self.scratch_blocks, self.block_size), dtype))
        return scratch

    def _carry_for(self, name: str, flat: Array) -> Array:
        carry = self._carry.get(name)
        if carry is None or carry.shape != flat.shape or carry.dtype != flat.dtype:
            carry = self._carry[name] = np.empty_like(flat)
        return carry

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_carry"] = {}
        state["_stage_scratch"] = {}
        return state


def _run(xp: NumpyOps, entries: Sequence[Entry], factors: Sequence[float], param: Array,
         u: Any, state: Sequence[Array], step: int,
         group: Mapping[str, Any]) -> tuple[Any, StepContext]:
    """Run ``entries`` on one block; returns the update in flight and its context."""
    ctx = StepContext(param, step, group)
    for (item, low, high, scalar), factor in zip(entries, factors, strict=True):
        if scalar:
            ctx.scale *= factor
        elif item.handles_scale or (ctx.scale == 1.0 and ctx.params_coef == 0.0
                                    and not isinstance(u, Ratio)):
            u = item.update(xp, u, state[low:high], ctx)
        else:
            u = run_transform(item, xp, u, state[low:high], ctx)
    return u, ctx


def _apply_update(xp: NumpyOps, param: Array, u: Any, ctx: StepContext) -> None:
    """``param += scale * (u + params_coef * param)``, in as few passes as it takes."""
    scale = ctx.scale
    if isinstance(u, Ratio):
        out = u.den if xp.owns(u.den) else xp.empty_like(param)
        np.divide(u.num, u.den, out=out)
        u = out
    if ctx.params_coef != 0.0:
        np.multiply(param, 1.0 + scale * ctx.params_coef, out=param)
    if scale == 1.0:
        np.add(param, u, out=param)
    elif xp.owns(u):
        np.multiply(u, scale, out=u)
        np.add(param, u, out=param)
    else:
        xp.add_(param, u, alpha=scale)
