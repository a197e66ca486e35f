"""torch side of the optimizer wrappers (see :mod:`optiplug.plugins.optimizers.wrapping`).

Imported only by the wrappers' torch builders (it imports torch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from optiplug.backends.numpy import NonfiniteGradientError
from optiplug.plugins.optimizers.wrapping import split_wrapper_part, with_wrapper_part

__all__ = ["Ema", "Lookahead", "TorchWrapper"]

Tensors = list[torch.Tensor]


class TorchWrapper(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` around another: shares its ``param_groups``, adds state.

    Subclasses set :attr:`arrays` (per-parameter tensors, created as copies of the parameters
    at construction) and implement :meth:`after_base_step`; :attr:`eval_array` names the tensor
    :meth:`eval` swaps into the parameters. ``register_step_pre_hook`` and friends work as on
    any torch optimizer, around the whole wrapped step.
    """

    arrays: ClassVar[tuple[str, ...]] = ()
    eval_array: ClassVar[str | None] = None
    torch_class: ClassVar[type[torch.optim.Optimizer]]
    """The class whose ``step`` does the math: the wrapper itself (as on optiplug's other torch
    optimizers)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.torch_class = cls

    def __init__(self, base: torch.optim.Optimizer, options: Mapping[str, Any],
                 nonfinite: str = "ignore") -> None:
        params = [p for group in base.param_groups for p in group["params"]]
        super().__init__(params, {})
        self.base = base
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self.options = dict(options)
        self.param_groups = base.param_groups
        self.defaults = base.defaults
        self.steps = 0
        self.evaluating = False
        with torch.no_grad():
            for p in params:
                self.state[p] = {key: p.detach().clone() for key in self.arrays}

    def _keys(self) -> list[tuple[str, torch.Tensor]]:
        """``(name, param)`` for every parameter: its name, else ``group.position``."""
        keys = []
        for index, group in enumerate(self.param_groups):
            names = group.get("param_names")
            for position, p in enumerate(group["params"]):
                keys.append((names[position] if names else f"{index}.{position}", p))
        return keys

    stepped_only: ClassVar[bool] = False
    """Update only the parameters that had a gradient this step (as torch.optim leaves a
    parameter whose ``grad`` is ``None`` untouched); else every parameter."""

    def after_base_step(self, params: Tensors, arrays: Mapping[str, Tensors]) -> None:
        """Update the parameters and the wrapper's tensors after the base optimizer stepped."""
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero (or drop) the gradients through the base optimizer."""
        self.base.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of the base optimizer, then the wrapper's update.

        Raises:
            RuntimeError: in evaluation mode (call :meth:`train` first).
        """
        if self.evaluating:
            raise RuntimeError(f"{type(self).__name__} is in evaluation mode (eval() swapped "
                               f"the evaluation weights in): call train() before step()")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.nonfinite != "ignore" and not self._grads_finite():
            self.skipped_steps += 1
            return loss
        skipped = getattr(self.base, "skipped_steps", 0)
        with torch.enable_grad():
            self.base.step()
        if getattr(self.base, "skipped_steps", 0) == skipped:
            self.steps += 1
            params = [p for _, p in self._keys()
                      if not self.stepped_only or p.grad is not None]
            self.after_base_step(params, {key: [self.state[p][key] for p in params]
                                          for key in self.arrays})
        return loss

    def _grads_finite(self) -> bool:
        """Whether every gradient is finite (one host sync); raises with ``"raise"``."""
        named = [(name, p.grad) for name, p in self._keys() if p.grad is not None]
        if not named:
            return True
        flags = torch.stack([grad.isfinite().all().to("cpu") for _, grad in named])
        if bool(flags.all()):
            return True
        if self.nonfinite == "raise":
            bad = [name for (name, _), ok in zip(named, flags.tolist(), strict=True) if not ok]
            raise NonfiniteGradientError(f"gradient of parameter {bad[0]!r} is not finite (NaN "
                                         f"or infinity); nothing was updated")
        return False

    def eval(self) -> None:
        """Swap the evaluation weights into the parameters (until :meth:`train`)."""
        if not self.evaluating:
            self._swap()
            self.evaluating = True

    def train(self) -> None:
        """Swap the training weights back into the parameters (after :meth:`eval`)."""
        if self.evaluating:
            self._swap()
            self.evaluating = False

    @torch.no_grad()
    def _swap(self) -> None:
        if self.eval_array is None:
            return
        for _, p in self._keys():
            other = self.state[p][self.eval_array]
            held = p.detach().clone()
            p.copy_(other)
            other.copy_(held)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict, with this wrapper's part put first in its
        ``"wrappers"`` list (options, step count and tensors by parameter name).

        Raises:
            RuntimeError: in evaluation mode (call :meth:`train` first).
        """
        if self.evaluating:
            raise RuntimeError("call train() before state_dict(): eval() swapped the "
                               "evaluation weights into the parameters")
        return with_wrapper_part(self.base.state_dict(), self, {
            name: {key: value.detach().clone() for key, value in self.state[p].items()}
            for name, p in self._keys()})

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a :meth:`state_dict`; nothing changes if any part does not fit.

        Raises:
            ConfigError: another optimizer's state, other options, a missing, extra or
                misshapen tensor, or a base state that does not load.
        """
        current = {name: self.state[p] for name, p in self._keys()}
        own, base_state = split_wrapper_part(state_dict, self, current, torch.Tensor)
        self.base.load_state_dict(base_state)
        with torch.no_grad():
            for name, p in self._keys():
                for key, value in own["state"][name].items():
                    self.state[p][key].copy_(value)
        self.steps = int(own["steps"])


def foreach_groups(params: Sequence[torch.Tensor]) -> dict[tuple[Any, Any], list[int]]:
    """Indices of ``params`` by (device, dtype), for multi-tensor kernels."""
    groups: dict[tuple[Any, Any], list[int]] = {}
    for index, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(index)
    return groups


class Lookahead(TorchWrapper):
    """Lookahead around a torch optimizer (multi-tensor synchronization every ``k`` steps)."""

    arrays = ("slow",)
    eval_array = "slow"
    stepped_only = True

    def after_base_step(self, params: Tensors, arrays: Mapping[str, Tensors]) -> None:
        if self.steps % self.options["k"]:
            return
        for indices in foreach_groups(params).values():
            fast = [params[i] for i in indices]
            slow = [arrays["slow"][i] for i in indices]
            torch._foreach_lerp_(slow, fast, self.options["alpha"])
            torch._foreach_copy_(fast, slow)


class Ema(TorchWrapper):
    """An exponential moving average of the parameters next to a torch optimizer."""

    arrays = ("average",)
    eval_array = "average"

    def after_base_step(self, params: Tensors, arrays: Mapping[str, Tensors]) -> None:
        every = self.options["every"]
        if self.steps % every:
            return
        for indices in foreach_groups(params).values():
            current = [params[i] for i in indices]
            average = [arrays["average"][i] for i in indices]
            if self.steps == every:
                torch._foreach_copy_(average, current)
            else:
                torch._foreach_lerp_(average, current, 1 - self.options["decay"])
