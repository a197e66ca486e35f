"""The NumPy optimizer machinery: param groups, named state, hooks, and cache-blocked updates.

A technique subclasses :class:`NumpyOptimizer` and holds only its math:

- :attr:`~NumpyOptimizer.state_keys` (or :meth:`~NumpyOptimizer.state_keys_for` when the state
  depends on a hyperparameter): the per-parameter state arrays, allocated like the parameter
  on its first step (zeros, or :meth:`~NumpyOptimizer.initial_state_value`);
- :meth:`~NumpyOptimizer.prepare`: once per parameter per step, turns the group's
  hyperparameters and the parameter's step count into the scalars the kernel needs;
- :meth:`~NumpyOptimizer.update`: the kernel, called on blocks of at most :attr:`block_size`
  elements with in-place ufuncs (``out=``) into the scratch blocks it is given, so every
  temporary stays in cache and a step allocates nothing that grows with the parameters.

Two more things keep a step fast without the technique's help. Small parameters (at most a
quarter block) that start together share packed state buffers, so their update runs as one
kernel call over a packed block instead of a dozen ufunc calls per parameter. Steps over many
elements are dealt out to worker threads (NumPy ufuncs release the GIL), each with its own
scratch blocks. Neither changes a single number: the kernel is elementwise. On the fused
engine (numba), a reused step plan runs as one compiled driver call per run of tensors and
thread (:attr:`NumpyOptimizer.fused_drivers`), again with the same numbers.

Gradients are given to :meth:`~NumpyOptimizer.step` (a ``{name: array}`` mapping or a list
aligned with the flattened parameters) or held in :attr:`~NumpyOptimizer.grads`, a
``{name: array}`` dict that ``step()`` reads when called without gradients and that
:meth:`~NumpyOptimizer.zero_grad` zeroes in place. Built over a NumPy layer, ``grads`` is the
layer's own ``grads`` dict. A parameter without a gradient (missing or ``None``) is skipped,
like a torch parameter whose ``.grad`` is ``None``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Final, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, NonfiniteGradientError
from ._clip import checked_clipping, clip_arrays
from ._numpy_kernels import (
    Engine,
    FusedCall,
    finite_rows,
    kernel_engine,
    record_fused_call,
    scatter,
)

__all__ = ["NonfiniteGradientError", "NumpyOptimizer", "RemovableHandle", "effective_grad"]

Array = NDArray[Any]
StepHook = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]
Nonfinite = Literal["raise", "skip", "ignore"]
_NONFINITE: Final = ("raise", "skip", "ignore")
_IMPLEMENTATION_KEYS: Final = frozenset({"params", "param_names", "nonfinite"})
# Keys that select another algorithm: a state saved under other values is another optimizer's.
_ALGORITHM_KEYS: Final = ("amsgrad", "nesterov", "centered", "decoupled_weight_decay")
SCHEDULER_GROUP_KEYS: Final = frozenset({"initial_lr", "max_lr", "min_lr", "base_momentum",
                                         "max_momentum"})
"""Keys LR schedulers add to param groups: a scheduled optimizer's state still loads."""


class RemovableHandle:
    """Returned by the hook registration methods; ``remove()`` unregisters the hook."""

    __slots__ = ("_hooks", "_key")
    _next_key: ClassVar[int] = 0

    def __init__(self, hooks: dict[int, StepHook]) -> None:
        self._hooks = hooks
        self._key = RemovableHandle._next_key
        RemovableHandle._next_key += 1

    @property
    def id(self) -> int:
        """The key under which the hook is stored."""
        return self._key

    def remove(self) -> None:
        """Unregister the hook (a second call does nothing)."""
        self._hooks.pop(self._key, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def effective_grad(param: Array, grad: Array, out: Array, weight_decay: float,
                   maximize: bool) -> Array:
    """The gradient torch's optimizers step with: ``(-grad if maximize) + weight_decay * param``.

    Writes into ``out`` only when it has to; otherwise returns ``grad`` itself (never modified).
    """
    if weight_decay:
        np.multiply(param, weight_decay, out=out)
        if maximize:
            np.subtract(out, grad, out=out)
        else:
            np.add(out, grad, out=out)
        return out
    if maximize:
        np.negative(grad, out=out)
        return out
    return grad


class NumpyOptimizer:
    """Base of NumPy optimizers: torch's vocabulary on NumPy arrays, updated in place.

    Args:
        params: ``{name: array}``, a NumPy layer (its ``params``; its ``grads`` become
            :attr:`grads`), a list of arrays (named ``"0"``, ``"1"``, ... in order), a list of
            ``(name, array)`` pairs, or a list of param-group dicts ``{"params": <any of
            those>, "lr": ..., ...}`` whose keys override the defaults for that group.
        defaults: The technique's hyperparameters, the defaults of every group.
        nonfinite: On a NaN/inf gradient: ``"raise"`` :class:`NonfiniteGradientError` naming
            the parameter, ``"skip"`` the whole step (params and state untouched, counted in
            :attr:`skipped_steps`), or ``"ignore"`` (apply it, like torch).
        block_size: Elements per block of the blocked update (a cache-sized chunk).
        threads: Worker threads for large steps (NumPy ufuncs release the GIL); ``None``:
            one per CPU core, up to 4. ``1`` runs everything in the calling thread.
        fused, foreach: torch's kernel choice, accepted so one config serves both backends:
            ``None`` or ``False`` only (NumPy has one kernel).
        clip_grad_norm, clip_grad_norm_type, clip_grad_value: Gradient clipping before every
            step, over the gradients of all groups, as ``torch.nn.utils.clip_grad_norm_`` /
            ``clip_grad_value_`` (see :mod:`optiplug.backends._clip`); after the ``nonfinite``
            check, on copies (the gradients given are not changed). ``None``: none.

    Attributes:
        param_groups: One dict per group: ``params`` (arrays), ``param_names`` and every
            hyperparameter. Schedulers edit ``lr``; every step reads the current values.
        state: Per-parameter state keyed by parameter name: ``step`` and the technique's arrays.
        grads: Gradients ``step()`` uses when called without any.
        defaults: The hyperparameters given at construction.
        skipped_steps: Steps skipped by ``nonfinite="skip"``.
        kernels: ``"numba"`` when steps run the technique's fused kernel
            (:meth:`update_fused`), ``"numpy"`` when they run its ufunc chain (:meth:`update`);
            chosen at construction by ``OPTIPLUG_NUMPY_KERNELS`` (see
            :func:`optiplug.backends.numpy.kernel_engine`). Both give the same numbers.
    """

    optiplug_backend: ClassVar[str] = "numpy"
    state_keys: ClassVar[tuple[str, ...]] = ()
    """Names of the per-parameter state arrays (see :meth:`state_keys_for`)."""
    scratch_blocks: ClassVar[int] = 3
    """How many scratch blocks :meth:`update` receives."""
    block_size: int = 131072
    pack_limit: ClassVar[int | None] = None
    """Largest parameter (elements) whose state is packed with its neighbours'; ``None``: a
    quarter block. Packing pays when the kernel makes many ufunc calls per parameter."""
    default_threads: ClassVar[int | None] = None
    """Threads of optimizers built without ``threads``; ``None``: one per core, up to 4."""
    parallel_threshold: ClassVar[int] = 1 << 18
    """Steps over fewer elements than this run in the calling thread."""
    whole_tensors: ClassVar[bool] = False
    """Whether :meth:`update` needs each parameter whole, for per-tensor rules such as trust
    ratios or per-matrix preconditioners: then ``param``, ``grad``, the state and the scratch
    arrays it receives have the parameter's shape, and a parameter is never cut into blocks,
    packed with others or split between threads."""
    fused_drivers: bool = True
    """Whether the fused path (:attr:`kernels` ``"numba"``) runs the steps of a reused plan
    through its kernel's multi-tensor driver: one compiled call per run of tensors (same
    group, dtype and step count) and thread. ``False``: one kernel call per tensor, as on a
    plan's first step (set it on an instance to compare the two)."""

    def __init__(self, params: Any, defaults: Mapping[str, Any], *,
                 nonfinite: Nonfinite = "ignore", block_size: int | None = None,
                 threads: int | None = None, fused: bool | None = None,
                 foreach: bool | None = None, clip_grad_norm: float | None = None,
                 clip_grad_norm_type: float = 2.0, clip_grad_value: float | None = None) -> None:
        self.clipping = checked_clipping(clip_grad_norm, clip_grad_norm_type, clip_grad_value)
        if self.clipping is not None and self.requires_closure:
            raise ConfigError(f"{type(self).__name__} evaluates its closure within the step: "
                              f"its gradients cannot be clipped before it")
        if nonfinite not in _NONFINITE:
            raise ConfigError(f"nonfinite must be one of {', '.join(_NONFINITE)}, "
                              f"got {nonfinite!r}")
        for key, value in (("fused", fused), ("foreach", foreach)):
            if value:
                raise ConfigError(f"{key}=True selects a torch kernel; the NumPy backend has "
                                  f"one kernel: leave {key} unset (or false) here")
        if block_size is not None:
            if block_size < 1024:
                raise ValueError(f"block_size must be at least 1024, got {block_size}")
            self.block_size = int(block_size)
        self.defaults: dict[str, Any] = dict(defaults)
        self.nonfinite: Nonfinite = nonfinite
        self.threads = (threads if threads is not None
                        else self.default_threads or min(_cpu_count(), 4))
        self.kernels: Engine = kernel_engine() if _has_fused(type(self)) else "numpy"
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[str, dict[str, Any]] = {}
        self.grads: dict[str, Array | None] = {}
        self.skipped_steps = 0
        self._step_pre_hooks: dict[int, StepHook] = {}
        self._step_post_hooks: dict[int, StepHook] = {}
        self._scratch: dict[tuple[np.dtype[Any], int], list[Array]] = {}
        self._prepare_cache: dict[tuple[int, int, np.dtype[Any]], Any] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._plan: _Plan | None = None
        self._fused_calls: dict[tuple[int, int], FusedCall | None] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._next_index = 0
        # A NumPy layer's grads dict, given directly or carried by normalized params
        # (optiplug.param_groups.ParamGroupList), becomes this optimizer's.
        module_grads = getattr(params, "grads", None)
        if isinstance(module_grads, dict):
            self.grads = module_grads
        if isinstance(getattr(params, "params", None), Mapping):
            params = params.params
        for group in _as_groups(params):
            self.add_param_group(group)
        if not self.param_groups:
            raise ValueError("optimizer got an empty parameter list")

    # ------------------------------------------------------------------ technique interface
    def state_keys_for(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        """The state arrays a parameter of ``group`` needs; :attr:`state_keys` by default."""
        return self.state_keys

    def initial_state_value(self, group: Mapping[str, Any], key: str) -> float:
        """The value state array ``key`` starts at; ``0``."""
        return 0.0

    def state_shape(self, group: Mapping[str, Any], key: str, param: Array
                    ) -> tuple[int, ...] | None:
        """Shape of state array ``key`` of ``param``: the parameter's. Only a :attr:`per_tensor`
        optimizer may return another (factored second moments, a scalar ``()``), or ``None``
        when ``param`` keeps no ``key`` (Adafactor's factors of a vector)."""
        return tuple(param.shape)

    requires_closure: ClassVar[bool] = False
    """Whether ``step`` takes a closure (``loss, grads = closure()``, evaluated as often as the
    technique needs, as L-BFGS does) instead of gradients; :meth:`closure_step` does the work."""

    def closure_step(self, closure: Callable[[], Any]) -> Any:
        """One step of a :attr:`requires_closure` technique (between the step hooks); returns
        what ``step`` returns (the loss)."""
        raise NotImplementedError

    per_tensor: ClassVar[bool] = False
    """Whether the technique updates whole tensors with :meth:`update_tensor` (norms, matrix
    products, per-tensor scalars) instead of blocks with :meth:`prepare` and :meth:`update`."""

    def update_tensor(self, group: Mapping[str, Any], param: Array, grad: Array,
                      state: dict[str, Any]) -> None:
        """Apply one step to a whole parameter, in place (for :attr:`per_tensor` techniques).

        Args:
            group: The parameter's group (current hyperparameters).
            param: The parameter (write into it).
            grad: Its gradient (read only).
            state: Its state: ``step`` (already incremented) and the arrays of
                :meth:`state_keys_for`, shaped by :meth:`state_shape` (write into them).
        """
        raise NotImplementedError

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        """The scalars :meth:`update` needs this step (``state['step']`` is already incremented).

        Must depend on ``group`` and ``state['step']`` only: it is called once per group, step
        count and dtype, and the result serves every parameter that shares them. Floats in a
        returned tuple are turned into NumPy scalars of the parameter's dtype."""
        raise NotImplementedError

    def update_fused(self, param: Array, grad: Array, state: Sequence[Array],
                     scalars: Any) -> None:
        """Optional: the same step as :meth:`update` in one pass, by a
        :func:`~optiplug.backends.numpy.fused_kernel` (flat arrays of any length, no scratch).

        Used instead of :meth:`update` when numba is installed (see
        :attr:`kernels`), and only when the class that defines it also defines (or inherits
        unchanged) the :meth:`update` it replaces. It must give the same bits as :meth:`update`.
        """
        raise NotImplementedError

    def update(self, param: Array, grad: Array, state: Sequence[Array],
               scratch: Sequence[Array], scalars: Any) -> None:
        """Apply one step to one block (or to one whole parameter, see
        :attr:`whole_tensors`), in place.

        Args:
            param: The block of the parameter (a view; write into it).
            grad: The block of the gradient (read only).
            state: Blocks of the state arrays, in :meth:`state_keys_for` order (write into them).
            scratch: :attr:`scratch_blocks` scratch arrays shaped like ``param``.
            scalars: What :meth:`prepare` returned.
        """
        raise NotImplementedError

    # -------------------------------------------------------------------------- the API
    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group: ``{"params": <arrays, named pairs or a dict>, <hyperparameter>: ...}``.

        Raises:
            ValueError: unknown hyperparameter, repeated name or array, a non-float or
                non-contiguous array.
        """
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError("a param group is a dict with a 'params' key")
        unknown = sorted(set(param_group) - set(self.defaults) - {"params", "param_names"})
        if unknown:
            raise ValueError(f"unknown hyperparameters in param group: {', '.join(unknown)}; "
                             f"{type(self).__name__} has: {', '.join(sorted(self.defaults))}")
        named = self._named(param_group["params"], param_group.get("param_names"))
        if not named:
            raise ValueError("a param group needs at least one parameter")
        known = {name for group in self.param_groups for name in group["param_names"]}
        known_ids = {id(p) for group in self.param_groups for p in group["params"]}
        for name, array in named:
            if name in known:
                raise ValueError(f"parameter name {name!r} appears twice")
            if id(array) in known_ids:
                raise ValueError(f"parameter {name!r} is already optimized (same array twice)")
            known.add(name)
            known_ids.add(id(array))
        group = {key: value for key, value in self.defaults.items()}
        group.update({k: v for k, v in param_group.items() if k not in ("params",
                                                                        "param_names")})
        group["params"] = [array for _, array in named]
        group["param_names"] = [name for name, _ in named]
        self.param_groups.append(group)
        self._plan = None

    def _named(self, params: Any, names: Sequence[str] | None) -> list[tuple[str, Array]]:
        if isinstance(params, np.ndarray):
            params = [params]
        elif isinstance(getattr(params, "params", None), Mapping):
            params = params.params
        items: list[tuple[str, Any]]
        if isinstance(params, Mapping):
            items = [(str(k), v) for k, v in params.items()]
        else:
            listed = list(params)
            if names is not None:
                if len(names) != len(listed):
                    raise ValueError("param_names and params differ in length")
                items = list(zip(names, listed, strict=True))
            else:
                items = []
                for item in listed:
                    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                        items.append(item)
                    else:
                        items.append((str(self._next_index + len(items)), item))
        self._next_index += len(items)
        for name, array in items:
            if not isinstance(array, np.ndarray):
                raise TypeError(f"parameter {name!r} is a {type(array).__name__}, not a NumPy "
                                f"array")
            if not np.issubdtype(array.dtype, np.floating):
                raise TypeError(f"parameter {name!r} has dtype {array.dtype}; optimizers update "
                                f"floating-point arrays")
            if not array.flags.c_contiguous or not array.flags.writeable:
                raise ValueError(f"parameter {name!r} must be a writeable C-contiguous array "
                                 f"(it is updated in place)")
        return items

    def register_step_pre_hook(self, hook: StepHook) -> RemovableHandle:
        """Call ``hook(optimizer, args, kwargs)`` before every step (torch's signature).

        The hook may return ``(args, kwargs)`` to replace the arguments of ``step``.
        """
        handle = RemovableHandle(self._step_pre_hooks)
        self._step_pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook: StepHook) -> RemovableHandle:
        """Call ``hook(optimizer, args, kwargs)`` after every step (torch's signature)."""
        handle = RemovableHandle(self._step_post_hooks)
        self._step_post_hooks[handle.id] = hook
        return handle

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the held gradients in place (or drop them with ``set_to_none``)."""
        for name, grad in self.grads.items():
            if grad is None:
                continue
            if set_to_none:
                self.grads[name] = None
            else:
                grad.fill(0)

    def step(self, grads: Mapping[str, Array | None] | Sequence[Array | None] | Callable[[], Any]
             | None = None) -> Any:
        """Update every parameter in place from its gradient.

        Args:
            grads: ``{name: gradient}``, a list aligned with the parameters of all groups in
                order, or ``None`` to use :attr:`grads`; for a :attr:`requires_closure`
                technique, the closure.

        Returns:
            ``None``, or for a :attr:`requires_closure` technique what :meth:`closure_step`
            returns (the loss).

        Raises:
            NonfiniteGradientError: a gradient is not finite and ``nonfinite="raise"``.
            ValueError: a gradient's shape differs from its parameter's, or an unknown name.
        """
        if self._step_pre_hooks:
            args: tuple[Any, ...] = (grads,) if grads is not None else ()
            kwargs: dict[str, Any] = {}
            for hook in list(self._step_pre_hooks.values()):
                result = hook(self, args, kwargs)
                if result is not None:
                    args, kwargs = result
            grads = kwargs.get("grads", args[0] if args else None)
        result = None
        if self.requires_closure:
            if not callable(grads):
                raise TypeError(f"{type(self).__name__}.step() needs a closure that returns "
                                f"(loss, grads), got {type(grads).__name__}")
            result = self.closure_step(grads)
        else:
            plan = self._plan
            if plan is None or not plan.serves(self.grads if grads is None else grads):
                plan = None
                work = self._work(grads)
            else:
                work = plan.work
            if self.nonfinite != "ignore" and not (self._schedule_finite(plan)
                                                   or self._all_finite(work)):
                self.skipped_steps += 1
            else:
                clipping = getattr(self, "clipping", None)
                if work and clipping is not None:
                    # Clipped copies are new arrays every step: nothing to keep as a plan.
                    clipped = clip_arrays([grad for _, _, _, grad in work], clipping)
                    self._apply([(group, name, param, grad) for (group, name, param, _), grad
                                 in zip(work, clipped, strict=True)])
                elif plan is not None:
                    self._run_units(plan.units, plan)
                elif work:
                    self._apply(work, self.grads if grads is None else grads)
        if self._step_post_hooks:
            args = (grads,) if grads is not None else ()
            for hook in list(self._step_post_hooks.values()):
                hook(self, args, {})
        return result

    # ------------------------------------------------------------------------ the update
    def _work(self, grads: Any) -> list[tuple[dict[str, Any], str, Array, Array]]:
        if grads is None:
            grads = self.grads
        work: list[tuple[dict[str, Any], str, Array, Array]] = []
        if isinstance(grads, Mapping):
            unknown = set(grads).difference(
                name for group in self.param_groups for name in group["param_names"])
            if unknown:
                raise ValueError(f"gradients for unknown parameters: {sorted(unknown)}")
            for group in self.param_groups:
                for name, param in zip(group["param_names"], group["params"], strict=True):
                    grad = grads.get(name)
                    if grad is not None:
                        work.append((group, name, param, _checked_grad(name, param, grad)))
            return work
        listed = list(grads)
        total = sum(len(group["params"]) for group in self.param_groups)
        if len(listed) != total:
            raise ValueError(f"got {len(listed)} gradients for {total} parameters")
        position = 0
        for group in self.param_groups:
            for name, param in zip(group["param_names"], group["params"], strict=True):
                grad = listed[position]
                position += 1
                if grad is not None:
                    work.append((group, name, param, _checked_grad(name, param, grad)))
        return work

    def _schedule_finite(self, plan: _Plan | None) -> bool:
        """Whether a reused plan's fused schedule sees only finite gradients, checked in one
        compiled pass per table; ``False`` when it cannot tell (then :meth:`_all_finite`
        checks per tensor, and names the parameter)."""
        if plan is None or not plan.schedule or plan.schedule[0] is None:
            return False
        for calls in plan.schedule[0].workers:
            for _, _, _, table, sizes, like in calls:
                if not finite_rows(table, sizes, like.dtype):
                    return False
        return True

    def _all_finite(self, work: list[tuple[dict[str, Any], str, Array, Array]]) -> bool:
        for _, name, _, grad in work:
            # min/max propagate NaN and expose infinity without allocating a mask.
            if grad.size and not (math.isfinite(grad.min()) and math.isfinite(grad.max())):
                if self.nonfinite == "raise":
                    raise NonfiniteGradientError(
                        f"gradient of parameter {name!r} is not finite (NaN or infinity); "
                        f"nothing was updated")
                return False
        return True

    def _allocate(self, work: list[tuple[dict[str, Any], str, Array, Array]]) -> None:
        """Create the state of parameters stepping for the first time.

        Small parameters of one group and dtype that start together get their state arrays
        as views into one shared buffer per state key (a :class:`_Bucket`), so a step can run
        the kernel once over all of them instead of once per parameter.
        """
        fresh = [(group, name, param) for group, name, param, _ in work
                 if name not in self.state]
        limit = self.block_size // 4 if self.pack_limit is None else self.pack_limit
        if self.whole_tensors:
            limit = 0
        elif self.kernels == "numba":
            # A fused call costs a few microseconds; copying a parameter and its gradient into
            # the packed block and back costs more than that beyond a few thousand elements.
            limit = min(limit, _FUSED_PACK_LIMIT)
        run: list[tuple[str, Array]] = []
        run_group: dict[str, Any] = {}
        run_size = 0

        def close() -> None:
            if len(run) > 1:
                self._pack(run_group, list(run))
            else:
                for name, param in run:
                    self._new_state(run_group, name, param)
            run.clear()

        for group, name, param in fresh:
            small = param.size <= limit
            fits = (run_group is group and bool(run) and run[0][1].dtype == param.dtype
                    and run_size + param.size <= self.block_size)
            if run and not (small and fits):
                close()
            if small:
                if not run:
                    run_group, run_size = group, 0
                run.append((name, param))
                run_size += param.size
            else:
                self._new_state(group, name, param)
        close()

    def _new_state(self, group: Mapping[str, Any], name: str, param: Array) -> None:
        state: dict[str, Any] = {"step": 0}
        for key in self.state_keys_for(group):
            value = self.initial_state_value(group, key)
            shape = self.state_shape(group, key, param)
            if shape is None:
                continue
            state[key] = (np.zeros(shape, param.dtype) if value == 0
                          else np.full(shape, value, param.dtype))
        self.state[name] = state
        self._buckets.pop(name, None)

    def _pack(self, group: Mapping[str, Any], members: list[tuple[str, Array]]) -> None:
        sizes = [param.size for _, param in members]
        offsets = np.cumsum([0, *sizes]).tolist()
        total = offsets[-1]
        dtype = members[0][1].dtype
        keys = self.state_keys_for(group)
        buffers = []
        for key in keys:
            value = self.initial_state_value(group, key)
            buffers.append(np.zeros(total, dtype) if value == 0 else np.full(total, value, dtype))
        bucket = _Bucket(tuple(name for name, _ in members), offsets, buffers)
        for index, (name, param) in enumerate(members):
            state: dict[str, Any] = {"step": 0}
            for key, buffer in zip(keys, buffers, strict=True):
                state[key] = buffer[offsets[index]:offsets[index + 1]].reshape(param.shape)
            self.state[name] = state
            self._buckets[name] = bucket

    def _prepared(self, group: Mapping[str, Any], state: dict[str, Any], dtype: np.dtype[Any]
                  ) -> Any:
        # prepare() depends on the group and the step count only: once per group and step.
        key = (id(group), state["step"], dtype)
        scalars = self._prepare_cache.get(key, _MISSING)
        if scalars is not _MISSING:
            return scalars
        scalars = self.prepare(group, state)
        if type(scalars) is tuple:
            # NumPy scalars of the array's dtype skip the per-call promotion of Python floats.
            kind = dtype.type
            scalars = tuple([kind(value) if type(value) is float else value
                             for value in scalars])
        self._prepare_cache[key] = scalars
        return scalars

    def _apply(self, work: list[tuple[dict[str, Any], str, Array, Array]],
               source: Any = None) -> None:
        """Run a step over ``work``; with the gradients' ``source`` (what ``step`` was given),
        keep the step's units as a plan that later steps with the same arrays reuse (an
        override that calls this without ``source`` sees every step)."""
        if self.per_tensor:
            for group, name, param, grad in work:
                if name not in self.state:
                    self._new_state(group, name, param)
                state = self.state[name]
                state["step"] += 1
                self.update_tensor(group, param, grad, state)
            return
        if any(name not in self.state for _, name, _, _ in work):
            self._allocate(work)
        units: list[_Unit] = []
        pending: dict[int, dict[str, tuple[dict[str, Any], Array, Array]]] = {}
        for group, name, param, grad in work:
            bucket = self._buckets.get(name)
            if bucket is not None:
                pending.setdefault(id(bucket), {})[name] = (group, param, grad)
            else:
                units.append(self._array_unit(group, name, param, grad))
        for members in pending.values():
            names = list(members)
            bucket = self._buckets[names[0]]
            steps = {self.state[name]["step"] for name in names}
            if len(names) == len(bucket.names) and len(steps) == 1:
                group, param, _ = members[names[0]]
                units.append(_Unit(group, [self.state[name] for name in bucket.names],
                                   param.dtype,
                                   _Packed(members[n][1].reshape(-1) for n in bucket.names),
                                   [members[n][2].reshape(-1) for n in bucket.names],
                                   bucket.buffers, bucket.offsets[-1]))
            else:
                # Members out of step (some skipped a step): update them one by one.
                for name in names:
                    group, param, grad = members[name]
                    units.append(self._array_unit(group, name, param, grad))
        # The same gradient arrays next step (in place, as backward passes write them) reuse
        # these units: no per-parameter Python work but the step counts.
        reusable = (isinstance(source, (Mapping, list, tuple))
                    and all(grad is given for (_, _, _, grad), given
                            in zip(work, self._given_grads(work, source), strict=True)))
        self._plan = _Plan.of(source, work, units) if reusable else None
        self._run_units(units)

    def _given_grads(self, work: list[tuple[dict[str, Any], str, Array, Array]], source: Any
                     ) -> list[Any]:
        """The gradient objects the caller gave for the parameters in ``work``."""
        if isinstance(source, Mapping):
            return [source.get(name) for _, name, _, _ in work]
        index = {name: position for position, name in enumerate(
            name for group in self.param_groups for name in group["param_names"])}
        return [source[index[name]] for _, name, _, _ in work]

    def _run_units(self, units: list[_Unit], plan: _Plan | None = None) -> None:
        """Advance the step counts and run the update over ``units``; given the reused
        ``plan`` they come from, the fused path builds its :class:`_Schedule` (on the plan's
        second step: a step whose gradients are new arrays never pays for it) and reuses it."""
        self._prepare_cache.clear()
        if (plan is not None and self.kernels == "numba" and self.fused_drivers
                and not self.whole_tensors):
            if plan.schedule and plan.schedule[0] is not None and (
                    plan.schedule[0].threads != (self.threads, self.parallel_threshold)):
                plan.schedule.clear()  # the thread settings changed: deal the elements again
            if plan.schedule:
                schedule = plan.schedule[0]
                if schedule is not None:
                    for state in schedule.states:
                        state["step"] += 1
                    self._run_schedule(schedule)
                    return
            else:
                for unit in units:
                    for state in unit.states:
                        state["step"] += 1
                schedule = self._fused_schedule(units)
                plan.schedule.append(schedule)
                if schedule is not None:
                    self._run_schedule(schedule)
                    return
                self._run_tasks([_Task(params, grads, arrays,
                                       self._prepared(group, states[0], dtype), size)
                                 for group, states, dtype, params, grads, arrays, size in units])
                return
        tasks: list[_Task] = []
        for group, states, dtype, params, grads, arrays, size in units:
            for state in states:
                state["step"] += 1
            tasks.append(_Task(params, grads, arrays, self._prepared(group, states[0], dtype),
                               size))
        self._run_tasks(tasks)

    def _run_tasks(self, tasks: list[_Task]) -> None:
        total = sum(task.size for task in tasks)
        # Threads pay only when each task's ufuncs run long enough to release the GIL usefully;
        # a fused kernel releases it for the whole task, so shorter tasks already pay.
        shortest = self.block_size // 4 if self.kernels == "numpy" else _FUSED_PACK_LIMIT
        if (self.threads <= 1 or total < self.parallel_threshold
                or total < len(tasks) * shortest):
            self._run(tasks, 0)
            return
        chunks = _split(tasks, self.threads, total, self.whole_tensors)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="optiplug")
        futures = [self._pool.submit(self._run, chunk, index)
                   for index, chunk in enumerate(chunks[1:], start=1)]
        self._run(chunks[0], 0)
        for future in futures:
            future.result()

    def _fused_schedule(self, units: list[_Unit]) -> _Schedule | None:
        """The fused step over ``units`` as driver calls (see :class:`_Schedule`), built once
        per plan after the step counts advanced; ``None`` when a technique's
        :meth:`update_fused` cannot be recorded (then it runs per tensor)."""
        runs: dict[tuple[int, np.dtype[Any], int, int], int] = {}
        prepared: list[tuple[dict[str, Any], dict[str, Any], np.dtype[Any]]] = []
        calls: list[tuple[FusedCall, int]] = []
        rows: list[list[tuple[list[int], int]]] = []
        states: list[dict[str, Any]] = []
        for group, unit_states, dtype, params, grads, arrays, _ in units:
            # A driver reads every array of a row as the run's dtype: a gradient of another
            # dtype (cast by the kernel itself when it is called per tensor) keeps those calls.
            if any(array.dtype != dtype for array in (
                    *(grads if isinstance(grads, list) else [grads]), *arrays)):
                return None
            states.extend(unit_states)
            key = (id(group), dtype, unit_states[0]["step"], len(arrays))
            index = runs.get(key)
            if index is None:
                scalars = self._prepared(group, unit_states[0], dtype)
                if type(scalars) is not tuple:
                    return None
                call = self._fused_call(len(arrays) + 2, len(scalars))
                if call is None:
                    return None
                count = 1 + max((argument.value for argument in call.arguments
                                 if argument.kind == "scalar"), default=-1)
                index = runs[key] = len(prepared)
                prepared.append((group, unit_states[0], dtype))
                calls.append((call, count))
                rows.append([])
            if isinstance(params, list):
                itemsize = dtype.itemsize
                bases = [array.ctypes.data for array in arrays]
                offset = 0
                for flat_param, flat_grad in zip(params, grads, strict=True):
                    rows[index].append(([flat_param.ctypes.data, flat_grad.ctypes.data,
                                         *(base + offset * itemsize for base in bases)],
                                        flat_param.size))
                    offset += flat_param.size
            else:
                rows[index].append(([params.ctypes.data, grads.ctypes.data,
                                     *(array.ctypes.data for array in arrays)], params.size))
        total = sum(size for run in rows for _, size in run)
        workers = 1 if self.threads <= 1 or total < self.parallel_threshold else self.threads
        share = -(-total // workers)
        plans: list[list[tuple[int, Callable[..., None], int, Array, Array, Array]]] = [
            [] for _ in range(workers)]
        worker, filled = 0, 0
        for index, run in enumerate(rows):
            dtype = prepared[index][2]
            pieces: list[list[tuple[list[int], int]]] = [[] for _ in range(workers)]
            for addresses, size in run:
                start = 0
                while True:
                    if filled >= share and worker < workers - 1:
                        worker, filled = worker + 1, 0
                    stop = size if worker == workers - 1 else min(size, start + share - filled)
                    pieces[worker].append(([address + start * dtype.itemsize
                                            for address in addresses], stop - start))
                    filled += stop - start
                    start = stop
                    if start >= size:
                        break
            call, count = calls[index]
            try:
                driver = call.kernel.driver(call.arguments)
            except OSError:  # no writable kernel cache directory: the per-tensor calls
                return None
            like = np.empty(0, dtype)
            for target, piece in zip(plans, pieces, strict=True):
                if piece:
                    table = np.array([addresses for addresses, _ in piece], np.intp)
                    sizes = np.array([size for _, size in piece], np.intp)
                    target.append((index, driver, count, table, sizes, like))
        return _Schedule(states, prepared, [plan for plan in plans if plan],
                         (self.threads, self.parallel_threshold))

    def _fused_call(self, arrays: int, scalars: int) -> FusedCall | None:
        key = (arrays, scalars)
        calls = self._fused_calls
        if key not in calls:
            calls[key] = record_fused_call(self.update_fused, arrays, scalars)
        return calls[key]

    def _run_schedule(self, schedule: _Schedule) -> None:
        scalars = [self._prepared(group, state, dtype) for group, state, dtype in schedule.runs]
        workers = schedule.workers
        if len(workers) == 1:
            _drive(workers[0], scalars)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="optiplug")
        futures = [self._pool.submit(_drive, calls, scalars) for calls in workers[1:]]
        _drive(workers[0], scalars)
        for future in futures:
            future.result()

    def _array_unit(self, group: dict[str, Any], name: str, param: Array,
                    grad: Array) -> _Unit:
        state = self.state[name]
        keys = self.state_keys_for(group)
        if self.whole_tensors:
            return _Unit(group, [state], param.dtype, param, grad, [state[key] for key in keys],
                         param.size)
        return _Unit(group, [state], param.dtype, param.reshape(-1), grad.reshape(-1),
                     [state[key].reshape(-1) for key in keys], param.size)

    def _run(self, tasks: Iterable[_Task], worker: int) -> None:
        if self.kernels == "numba":
            self._run_fused(tasks, worker)
            return
        size = self.block_size
        update = self.update
        for task in tasks:
            params, grads, arrays, scalars, n = task
            if isinstance(params, list):
                dtype = params[0].dtype
                scratch = self._scratch_for(dtype, worker)
                packed_param, packed_grad = scratch[-2][:n], scratch[-1][:n]
                np.concatenate(params, out=packed_param)
                np.concatenate(grads, out=packed_grad)
                update(packed_param, packed_grad, arrays, [s[:n] for s in scratch[:-2]],
                       scalars)
                start = 0
                for flat in params:
                    stop = start + flat.size
                    np.copyto(flat, packed_param[start:stop])
                    start = stop
                continue
            scratch = self._scratch_for(params.dtype, worker)[:-2]
            if self.whole_tensors:
                whole = ([s[:n].reshape(params.shape) for s in scratch] if n <= size else
                         [np.empty_like(params) for _ in range(self.scratch_blocks)])
                update(params, grads, arrays, whole, scalars)
                continue
            if n <= size:
                update(params, grads, arrays, [s[:n] for s in scratch], scalars)
                continue
            for start in range(0, n, size):
                stop = min(start + size, n)
                m = stop - start
                update(params[start:stop], grads[start:stop], [a[start:stop] for a in arrays],
                       scratch if m == size else [s[:m] for s in scratch], scalars)

    def _run_fused(self, tasks: Iterable[_Task], worker: int) -> None:
        # One pass per array: a fused kernel keeps its temporaries in registers, so there is
        # nothing to block for the cache.
        update = self.update_fused
        for params, grads, arrays, scalars, n in tasks:
            if isinstance(params, list):
                scratch = self._scratch_for(params[0].dtype, worker)
                packed_param, packed_grad = scratch[-2][:n], scratch[-1][:n]
                np.concatenate(params, out=packed_param)
                np.concatenate(grads, out=packed_grad)
                update(packed_param, packed_grad, arrays, scalars)
                if isinstance(params, _Packed):
                    scatter(packed_param, *params.layout())
                    continue
                start = 0
                for flat in params:
                    stop = start + flat.size
                    np.copyto(flat, packed_param[start:stop])
                    start = stop
                continue
            update(params, grads, arrays, scalars)

    def _scratch_for(self, dtype: np.dtype[Any], worker: int) -> list[Array]:
        key = (dtype, worker)
        blocks = self._scratch.get(key)
        if blocks is None:
            # The technique's scratch blocks plus two for packing small parameters.
            storage = np.empty((self.scratch_blocks + 2, self.block_size), dtype)
            blocks = self._scratch[key] = list(storage)
        return blocks

    # ---------------------------------------------------------------------- state dicts
    def state_dict(self) -> dict[str, Any]:
        """A copy of the state keyed by parameter name, and the groups' hyperparameters.

        ``{"optimizer": class name, "technique": registry name (when built by optiplug),
        "state": {name: {"step": n, key: array}},
        "param_groups": [{hyperparameters..., "param_names": [...]}]}``. Convert it for the
        torch backend with :func:`optiplug.convert_state`.
        """
        technique = getattr(self, "optiplug_technique", None)
        return {
            "optimizer": type(self).__qualname__,
            **({"technique": technique} if technique is not None else {}),
            "state": {name: {key: value.copy() if isinstance(value, np.ndarray) else value
                             for key, value in state.items()}
                      for name, state in self.state.items()},
            "param_groups": [{key: (list(value) if key == "param_names" else value)
                              for key, value in group.items() if key != "params"}
                             for group in self.param_groups],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a :meth:`state_dict`, matching parameters by name (their order may differ).

        The groups must hold the same parameter names (in any order); the hyperparameters
        saved with each group are restored, as torch does.

        Raises:
            ConfigError: another optimizer's state, a missing or extra parameter, a group that
                differs, a wrong shape or state key. Nothing is changed then.
        """
        problems = self._load_problems(state_dict)
        if problems:
            raise ConfigError("cannot load optimizer state: " + "; ".join(problems))
        saved_groups = state_dict["param_groups"]
        by_name = {name: index for index, group in enumerate(saved_groups)
                   for name in group["param_names"]}
        new_state: dict[str, dict[str, Any]] = {}
        for group in self.param_groups:
            for name, param in zip(group["param_names"], group["params"], strict=True):
                saved = state_dict["state"].get(name)
                if saved is None:
                    continue
                entry: dict[str, Any] = {}
                for key, value in saved.items():
                    if isinstance(value, np.ndarray):
                        current = self.state.get(name, {}).get(key)
                        if isinstance(current, np.ndarray):
                            np.copyto(current, value, casting="same_kind")
                            entry[key] = current
                        else:
                            entry[key] = np.array(value, dtype=param.dtype, copy=True)
                    else:
                        entry[key] = value
                new_state[name] = entry
        for group in self.param_groups:
            saved_group = saved_groups[by_name[group["param_names"][0]]]
            for key, value in saved_group.items():
                if key not in ("params", "param_names"):
                    group[key] = value
        old_state, self.state = self.state, new_state
        self._plan = None
        # A bucket survives only if every member still holds views of its buffers.
        self._buckets = {
            name: bucket for name, bucket in self._buckets.items()
            if all(member in new_state and member in old_state
                   and all(new_state[member][key] is old_state[member][key]
                           for key in old_state[member] if key != "step")
                   for member in bucket.names)}

    def _load_problems(self, state_dict: Mapping[str, Any]) -> list[str]:
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(
                state_dict):
            return ["expected a dict with 'state' and 'param_groups' (from state_dict())"]
        kind = state_dict.get("optimizer")
        if kind != type(self).__qualname__:
            return [f"it is the state of {kind or 'an unknown optimizer'}, not of "
                    f"{type(self).__qualname__}"]
        saved_technique = state_dict.get("technique")
        own_technique = getattr(self, "optiplug_technique", None)
        if None not in (saved_technique, own_technique) and saved_technique != own_technique:
            return [f"it is the state of optimizer {saved_technique!r}, not of "
                    f"{own_technique!r}"]
        saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(saved_groups, (list, tuple)) or not all(
                isinstance(group, Mapping) for group in saved_groups):
            return ["'param_groups' must be a list of dicts"]
        if not all(isinstance(group.get("param_names"), (list, tuple)) for group in saved_groups):
            return ["the saved param groups carry no 'param_names' list"]
        if not isinstance(saved_state, Mapping) or not all(
                isinstance(entry, Mapping) for entry in saved_state.values()):
            return ["'state' must map each parameter name to a dict of its state"]
        problems: list[str] = []
        saved_names = [name for group in saved_groups for name in group["param_names"]]
        own_names = [name for group in self.param_groups for name in group["param_names"]]
        missing = sorted(set(own_names) - set(saved_names))
        extra = sorted(set(saved_names) - set(own_names))
        if missing:
            problems.append(f"no saved state for parameters {missing}")
        if extra:
            problems.append(f"saved state has unknown parameters {extra}")
        if problems:
            return problems
        group_of = {name: index for index, group in enumerate(saved_groups)
                    for name in group["param_names"]}
        for index, group in enumerate(self.param_groups):
            origins = {group_of[name] for name in group["param_names"]}
            saved = saved_groups[next(iter(origins))]
            if len(origins) != 1 or set(saved["param_names"]) != set(group["param_names"]):
                problems.append(f"param group {index} ({group['param_names']}) differs from "
                                f"the saved groups")
                continue
            own_keys = set(group) - _IMPLEMENTATION_KEYS - SCHEDULER_GROUP_KEYS
            saved_keys = set(saved) - _IMPLEMENTATION_KEYS - SCHEDULER_GROUP_KEYS
            if own_keys != saved_keys:
                problems.append(f"param group {index} has hyperparameters {sorted(own_keys)}, "
                                f"the saved group {sorted(saved_keys)}")
            for key in _ALGORITHM_KEYS:
                if key in group and saved.get(key) != group[key]:
                    problems.append(f"param group {index} has {key}={group[key]!r}, the saved "
                                    f"state {key}={saved.get(key)!r} (another algorithm)")
            keys = self.state_keys_for(saved)
            for name, param in zip(group["param_names"], group["params"], strict=True):
                entry = state_dict["state"].get(name)
                if entry is None:
                    continue
                expected = {key for key in keys
                            if self.state_shape(saved, key, param) is not None} | {"step"}
                if set(entry) != expected:
                    problems.append(f"state of {name!r} has keys {sorted(entry)}, expected "
                                    f"{sorted(expected)}")
                    continue
                for key, value in entry.items():
                    if key == "step":
                        if not isinstance(value, (int, np.integer)) or value < 0:
                            problems.append(f"state of {name!r}: step must be a non-negative "
                                            f"integer, got {value!r}")
                    elif not (isinstance(value, np.ndarray)
                              and np.can_cast(value.dtype, param.dtype, "same_kind")):
                        problems.append(f"state {key!r} of {name!r} is not an array castable to "
                                        f"{param.dtype}")
                    elif np.shape(value) != (shape := self.state_shape(saved, key, param)):
                        problems.append(f"state {key!r} of {name!r} has shape "
                                        f"{np.shape(value)}, expected {shape}")
        return problems

    # ------------------------------------------------------------------------- plumbing
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        state["_scratch"] = {}
        state["_prepare_cache"] = {}
        # A copy's state arrays are no longer views of the bucket buffers: unpack them.
        state["_buckets"] = {}
        state["_plan"] = None
        state["_fused_calls"] = {}
        return state

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            hyper = ", ".join(f"{k}={v!r}" for k, v in group.items()
                              if k not in ("params", "param_names"))
            lines.append(f"  group {index}: {len(group['params'])} params, {hyper}")
        return "\n".join([*lines, ")"])


_MISSING: Final = object()
_FUSED_PACK_LIMIT: Final = 4096


class _Bucket(NamedTuple):
    """Small parameters whose state arrays are consecutive views into shared buffers."""

    names: tuple[str, ...]
    offsets: list[int]
    buffers: list[Array]


class _Packed(list[Array]):
    """The flat parameters of a bucket, with their addresses and offsets in the packed block
    (computed once), for the fused path's one-call copy back."""

    _layout: tuple[Array, Array] | None = None

    def layout(self) -> tuple[Array, Array]:
        if self._layout is None:
            addresses = np.array([flat.ctypes.data for flat in self], np.intp)
            offsets = np.cumsum([0, *(flat.size for flat in self)], dtype=np.intp)
            self._layout = (addresses, offsets)
        return self._layout


class _Unit(NamedTuple):
    """What a step does for one array or bucket, kept between steps: the group and states it
    advances and the flat views :class:`_Task` hands to the kernel."""

    group: dict[str, Any]
    states: list[dict[str, Any]]
    dtype: np.dtype[Any]
    params: Any
    grads: Any
    arrays: list[Array]
    size: int


class _Schedule(NamedTuple):
    """A plan's fused step as compiled calls, built once (:meth:`NumpyOptimizer._fused_schedule`).

    Units of one group, dtype and step count form a *run*: their arrays' addresses are rows of
    a table (param, grad, state...) that the kernel's multi-tensor driver walks in one call.
    The elements are dealt out evenly to the worker threads (arrays cut where needed: the
    kernels are elementwise), so each thread makes one call per run and step.
    """

    states: list[dict[str, Any]]
    """Every state the step advances."""
    runs: list[tuple[dict[str, Any], dict[str, Any], np.dtype[Any]]]
    """Per run: the group, a state and the dtype its scalars are prepared from."""
    workers: list[list[tuple[int, Callable[..., None], int, Array, Array, Array]]]
    """Per thread: (run, driver, scalars used, address table, sizes, dtype stand-in) calls."""
    threads: tuple[int, int]
    """The optimizer's ``threads`` and ``parallel_threshold`` it was dealt out for."""


def _drive(calls: list[tuple[int, Callable[..., None], int, Array, Array, Array]],
           scalars: list[Any]) -> None:
    for run, driver, count, table, sizes, like in calls:
        driver(table, sizes, like, *scalars[run][:count])


class _Plan(NamedTuple):
    """A step's work and units, reused while the gradients are the same array objects."""

    source: Any
    names: tuple[Any, ...]
    grads: tuple[Any, ...]
    work: list[tuple[dict[str, Any], str, Array, Array]]
    units: list[_Unit]
    schedule: list[_Schedule | None]
    """The fused path's :class:`_Schedule` once built (``[None]``: the technique has none)."""

    @classmethod
    def of(cls, source: Any, work: list[tuple[dict[str, Any], str, Array, Array]],
           units: list[_Unit]) -> _Plan:
        if isinstance(source, Mapping):
            return cls(source, tuple(source), tuple(source.values()), work, units, [])
        return cls(source, (), tuple(source), work, units, [])

    def serves(self, grads: Any) -> bool:
        """Whether ``grads`` holds exactly the arrays (and ``None`` entries) this plan saw."""
        if isinstance(grads, Mapping):
            if len(grads) != len(self.names):
                return False
            get = grads.get
            return all(get(name, _MISSING) is grad
                       for name, grad in zip(self.names, self.grads, strict=True))
        if callable(grads) or not isinstance(grads, Sequence) or len(grads) != len(self.grads):
            return False
        return all(given is grad for given, grad in zip(grads, self.grads, strict=True))


class _Task(NamedTuple):
    """One unit of kernel work: an array (flat views) or a bucket (lists of flat views)."""

    params: Any
    grads: Any
    arrays: list[Array]
    scalars: Any
    size: int


def _split(tasks: list[_Task], workers: int, total: int,
           whole: bool = False) -> list[list[_Task]]:
    """Deal tasks out to ``workers`` threads, about equal elements each; arrays may be cut
    unless ``whole``."""
    share = -(-total // workers)
    chunks: list[list[_Task]] = [[]]
    filled = 0
    for task in tasks:
        if whole or isinstance(task.params, list):
            if filled >= share and len(chunks) < workers:
                chunks.append([])
                filled = 0
            chunks[-1].append(task)
            filled += task.size
            continue
        start, n = 0, task.size
        while start < n:
            if filled >= share and len(chunks) < workers:
                chunks.append([])
                filled = 0
            stop = n if len(chunks) == workers else min(n, start + share - filled)
            chunks[-1].append(_Task(task.params[start:stop], task.grads[start:stop],
                                    [a[start:stop] for a in task.arrays], task.scalars,
                                    stop - start))
            filled += stop - start
            start = stop
    return chunks


def _has_fused(cls: type) -> bool:
    """Whether ``cls`` has an :meth:`update_fused` that replaces the :meth:`update` it runs:
    a subclass that overrides ``update`` alone must not inherit its parent's fused kernel."""
    mro = cls.__mro__
    fused_owner = next(k for k in mro if "update_fused" in k.__dict__)
    update_owner = next(k for k in mro if "update" in k.__dict__)
    return fused_owner is not NumpyOptimizer and issubclass(fused_owner, update_owner)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _as_groups(params: Any) -> list[Mapping[str, Any]]:
    if isinstance(params, np.ndarray):
        return [{"params": [params]}]
    if isinstance(params, Mapping):
        if "params" in params and not isinstance(params["params"], np.ndarray):
            return [params]
        return [{"params": params}]
    listed = list(params)
    if listed and all(isinstance(item, Mapping) for item in listed):
        return listed
    if any(isinstance(item, Mapping) for item in listed):
        raise TypeError("params mixes param-group dicts with parameters")
    return [{"params": listed}] if listed else []


def _checked_grad(name: str, param: Array, grad: Any) -> Array:
    array: Array = np.asarray(grad)
    if array.shape != param.shape:
        raise ValueError(f"gradient of {name!r} has shape {array.shape}, the parameter "
                         f"{param.shape}")
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array
