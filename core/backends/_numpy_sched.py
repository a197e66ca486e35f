"""NumPy learning-rate schedulers: the base class that NumPy scheduler builders return.

:class:`NumpyScheduler` mirrors ``torch.optim.lr_scheduler.LRScheduler`` step for step, so a
NumPy scheduler produces the same learning rates as its torch counterpart to the last bit:

- Construction with ``last_epoch=-1`` stores every group's ``lr`` as ``initial_lr`` (unless a
  group already has one), takes :attr:`~NumpyScheduler.base_lrs` from ``initial_lr`` and makes
  the *initial step* (``last_epoch`` becomes 0), which may already change ``lr``.
- :meth:`~NumpyScheduler.step` advances ``last_epoch`` and writes :meth:`get_lr` into every
  group; ``get_lr`` may be chainable (computed from the current ``group["lr"]``, as torch's
  recursive forms are) or closed-form, exactly as the torch scheduler it mirrors.
- :meth:`~NumpyScheduler.state_dict` holds every attribute but the optimizer, under torch's
  attribute names, so a torch scheduler's state dict loads into the NumPy one and back.

The only thing a scheduler needs from an optimizer is ``param_groups``: a list of dicts, each
with an ``"lr"`` key the scheduler may overwrite (see :class:`SchedulableOptimizer`).
"""

from __future__ import annotations

import copy
import types
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, Protocol

__all__ = ["NumpyChainedScheduler", "NumpyLambdaScheduler", "NumpyScheduler",
           "NumpySequentialScheduler",
           "SchedulableOptimizer", "check_per_group", "checked_param_groups"]

# torch keeps this flag in the instance dict once a step ran; it only gates a warning, so a torch
# state dict may carry it while a NumPy scheduler never does.
_TORCH_ONLY_KEYS: Final = frozenset({"_get_lr_called_within_step"})


class SchedulableOptimizer(Protocol):
    """What a NumPy scheduler drives: param groups, each a dict with an editable ``"lr"``."""

    param_groups: list[dict[str, Any]]


def checked_param_groups(optimizer: Any) -> list[dict[str, Any]]:
    """``optimizer.param_groups``, checked to be a non-empty list of dicts holding ``"lr"``.

    Raises:
        TypeError: the optimizer has no such param groups.
    """
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not groups:
        raise TypeError(f"{type(optimizer).__name__} is not an optimizer a NumPy scheduler can "
                        f"drive: it needs param_groups, a non-empty list of dicts with an 'lr'")
    for index, group in enumerate(groups):
        if not isinstance(group, dict) or "lr" not in group:
            raise TypeError(f"param_groups[{index}] of {type(optimizer).__name__} is not a dict "
                            f"with an 'lr' key")
    return groups


def check_per_group(optimizer: Any, **values: object) -> None:
    """Check that every per-group hyperparameter given as a sequence has one value per group.

    Called by both backends' builders, so a mismatch is a config error at the field's path
    before either scheduler is made (torch would raise a bare ``ValueError``).

    Raises:
        ConfigError: a sequence's length differs from the number of param groups.
    """
    from ..errors import ConfigError, ConfigIssue

    count = len(checked_param_groups(optimizer))
    issues = [ConfigIssue(name, f"has {len(value)} values but the optimizer has {count} param "
                                f"group(s): give one value, or one per group")
              for name, value in values.items()
              if isinstance(value, (list, tuple)) and len(value) != count]
    if issues:
        raise ConfigError(issues)


class NumpyScheduler:
    """Base of NumPy learning-rate schedulers, with ``torch.optim.lr_scheduler``'s semantics.

    Subclasses set their hyperparameters as attributes, then call ``super().__init__``, and
    implement :meth:`get_lr` (and :meth:`closed_form_lr` where torch has a closed form).

    Args:
        optimizer: Any object with ``param_groups`` (list of dicts holding ``"lr"``).
        last_epoch: Index of the last step taken; ``-1`` starts a new schedule. Any other value
            resumes one and needs ``initial_lr`` in every group.

    Attributes:
        optimizer: The optimizer whose ``lr`` values this scheduler writes.
        base_lrs: Every group's ``initial_lr``.
        last_epoch: Number of :meth:`step` calls since the start (0 right after construction).

    Raises:
        TypeError: ``optimizer`` has no usable ``param_groups``.
        KeyError: resuming (``last_epoch >= 0``) without ``initial_lr`` in a group.
    """

    optiplug_backend: Final = "numpy"
    steps_on_metric: ClassVar[bool] = False
    """Whether :meth:`step` takes the monitored metric (reduce-on-plateau schedulers do)."""

    def __init__(self, optimizer: Any, last_epoch: int = -1) -> None:
        groups = checked_param_groups(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for index, group in enumerate(groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param_groups[{index}] has no 'initial_lr' while resuming "
                                   f"with last_epoch={last_epoch}: load the optimizer's state "
                                   f"first, or start with last_epoch=-1")
        self.base_lrs: list[float] = [group["initial_lr"] for group in groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        """The learning rates for step :attr:`last_epoch` (already advanced), one per group."""
        raise NotImplementedError

    def closed_form_lr(self) -> list[float]:
        """The learning rates at :attr:`last_epoch` from :attr:`base_lrs` alone.

        Schedulers without a closed form fall back to :meth:`get_lr`, as torch does.
        """
        return self.get_lr()

    def group_lrs(self) -> list[float]:
        """The optimizer's current ``lr`` of every group."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self) -> None:
        """Advance one step and write the new learning rates into the optimizer's groups.

        Call it after the optimizer's ``step``, like a torch scheduler.
        """
        self._step_count += 1
        self._update_lr(None)

    def _update_lr(self, epoch: int | None) -> None:
        # epoch=None: the chainable path of step(); an int jumps there with the closed form,
        # which is how torch's SequentialLR starts the next scheduler at a milestone.
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            values = self.closed_form_lr()
        groups = self.optimizer.param_groups
        if len(values) != len(groups):
            raise ValueError(f"{type(self).__name__} computed {len(values)} learning rates for "
                             f"{len(groups)} param groups (a group was added after the "
                             f"scheduler was built?)")
        for group, lr in zip(groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in groups]

    def get_last_lr(self) -> list[float]:
        """The learning rates the last :meth:`step` (or construction) set, one per group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """A copy of every attribute but the optimizer, under torch's attribute names."""
        return {key: copy.deepcopy(value) for key, value in vars(self).items()
                if key != "optimizer"}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (of this class, or of the torch scheduler it mirrors).

        Learning rates of the chainable schedules continue from the optimizer's current
        ``lr`` values, so load the optimizer's state too, as with torch.

        Raises:
            ValueError: the keys differ from this scheduler's (it is another scheduler's
                state); nothing is changed.
        """
        self._check_state(state_dict)
        own = set(vars(self)) - {"optimizer"}
        vars(self).update({key: copy.deepcopy(state_dict[key]) for key in own})

    def _check_state(self, state_dict: Mapping[str, Any]) -> None:
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"a {type(self).__name__} state dict must be a mapping, got "
                             f"{type(state_dict).__name__}")
        own = set(vars(self)) - {"optimizer"}
        given = set(state_dict) - _TORCH_ONLY_KEYS
        missing, unexpected = sorted(own - given), sorted(given - own)
        if missing or unexpected:
            raise ValueError(f"state dict does not belong to {type(self).__name__}: missing "
                             f"{missing}, unexpected {unexpected}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(last_epoch={self.last_epoch}, "
                f"lr={getattr(self, '_last_lr', None)})")


class NumpyLambdaScheduler(NumpyScheduler):
    """``lr_t = base_lr * factor(t)`` for a factor function of the step (torch's ``LambdaLR``).

    The way to write a schedule torch has no class for: give the same factor to this class and
    to ``torch.optim.lr_scheduler.LambdaLR`` and both backends produce the same learning rates.
    Make the factor a callable object (an instance with ``__call__``), not a function or a
    lambda: its attributes are then saved in :meth:`state_dict`, exactly as torch saves them.

    Args:
        optimizer: Any object with ``param_groups``.
        lr_lambda: The factor of step ``t``, or one factor per param group.
        last_epoch: ``-1`` for a new schedule.

    Raises:
        ValueError: a list of factors whose length is not the number of param groups.
    """

    def __init__(self, optimizer: Any,
                 lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
                 last_epoch: int = -1) -> None:
        count = len(checked_param_groups(optimizer))
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != count:
                raise ValueError(f"expected {count} lr_lambdas, got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            assert callable(lr_lambda)
            self.lr_lambdas = [lr_lambda] * count
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base_lr * factor(self.last_epoch)
                for factor, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer; a callable object's attributes under
        ``lr_lambdas`` (``None`` for a function), as torch's ``LambdaLR`` saves them."""
        state = {key: copy.deepcopy(value) for key, value in vars(self).items()
                 if key not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [None if isinstance(factor, types.FunctionType)
                               else copy.deepcopy(vars(factor)) for factor in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`, the factor objects' attributes included.

        Raises:
            ValueError: the keys differ, or ``lr_lambdas`` has the wrong length; nothing is
                changed.
        """
        self._check_state(state_dict)
        saved = state_dict["lr_lambdas"]
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.lr_lambdas):
            raise ValueError(f"state dict does not belong to this {type(self).__name__}: it "
                             f"needs lr_lambdas with {len(self.lr_lambdas)} entries")
        vars(self).update({key: copy.deepcopy(value) for key, value in state_dict.items()
                           if key != "lr_lambdas"})
        for factor, attributes in zip(self.lr_lambdas, saved, strict=True):
            if attributes is not None:
                vars(factor).update(copy.deepcopy(attributes))


def _check_children(optimizer: Any, schedulers: Sequence[NumpyScheduler], owner: str) -> None:
    if not schedulers:
        raise ValueError(f"{owner} needs at least one scheduler")
    for index, scheduler in enumerate(schedulers):
        if not isinstance(scheduler, NumpyScheduler):
            raise TypeError(f"schedulers[{index}] is a {type(scheduler).__name__}, not a "
                            f"NumpyScheduler")
        if scheduler.steps_on_metric:
            raise ValueError(f"schedulers[{index}] ({type(scheduler).__name__}) steps on a "
                             f"metric and cannot run in a {owner}, as in torch")
        if scheduler.optimizer is not optimizer:
            raise ValueError(f"schedulers[{index}] drives another optimizer")


class _CompositeScheduler(NumpyScheduler):
    """Shared state handling of schedulers made of schedulers: each child's state nested."""

    _schedulers: list[NumpyScheduler]

    def state_dict(self) -> dict[str, Any]:
        """Own attributes plus every inner scheduler's state dict under ``_schedulers``."""
        state = {key: copy.deepcopy(value) for key, value in vars(self).items()
                 if key not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore own attributes and every inner scheduler's state.

        Raises:
            ValueError: the keys or the number of inner schedulers differ; nothing is changed.
        """
        self._check_state(state_dict)
        for scheduler, state in zip(self._schedulers, state_dict["_schedulers"], strict=True):
            scheduler.load_state_dict(state)
        vars(self).update({key: copy.deepcopy(value) for key, value in state_dict.items()
                           if key in vars(self) and key != "_schedulers"})

    def _check_state(self, state_dict: Mapping[str, Any]) -> None:
        # Every level is checked before anything is loaded, so a bad state changes nothing.
        super()._check_state(state_dict)
        inner = state_dict["_schedulers"]
        if not isinstance(inner, (list, tuple)) or len(inner) != len(self._schedulers):
            raise ValueError(f"state dict does not belong to this {type(self).__name__}: it "
                             f"needs _schedulers with {len(self._schedulers)} entries")
        for scheduler, state in zip(self._schedulers, inner, strict=True):
            scheduler._check_state(state)


class NumpySequentialScheduler(_CompositeScheduler):
    """Run schedulers one after another, switching at milestones (torch's ``SequentialLR``).

    At milestone ``m`` the next scheduler restarts from its closed form at step 0, exactly as
    ``torch.optim.lr_scheduler.SequentialLR`` does. The schedulers must drive ``optimizer``
    and be built just before this one (their construction steps are undone here).

    Args:
        optimizer: The optimizer every scheduler drives.
        schedulers: The schedulers, in order.
        milestones: ``len(schedulers) - 1`` step indices at which the next scheduler takes over.
        last_epoch: ``-1`` for a new schedule.

    Raises:
        ValueError: no scheduler, a scheduler driving another optimizer or stepping on a
            metric, or a wrong number of milestones.
    """

    def __init__(self, optimizer: Any, schedulers: Sequence[NumpyScheduler],
                 milestones: Sequence[int], last_epoch: int = -1) -> None:
        _check_children(optimizer, schedulers, "sequence")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{len(schedulers)} schedulers need {len(schedulers) - 1} "
                             f"milestones, got {len(milestones)}")
        groups = checked_param_groups(optimizer)
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in groups:
            group["lr"] = group["initial_lr"]
        self._undo_initial_steps(self)
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @staticmethod
    def _undo_initial_steps(scheduler: NumpyScheduler) -> None:
        # As torch's recursive_undo: composites pass it to their children.
        if isinstance(scheduler, _CompositeScheduler):
            for inner in scheduler._schedulers:
                NumpySequentialScheduler._undo_initial_steps(inner)
        else:
            scheduler.last_epoch -= 1

    def step(self) -> None:
        """Advance the scheduler in charge of the next step (restarting it at a milestone)."""
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class NumpyChainedScheduler(_CompositeScheduler):
    """Step several schedulers together, each on the lr the last one left (``ChainedScheduler``).

    Chainable schedulers multiply: an exponential decay chained with a step decay gives their
    product. A closed-form scheduler in the chain overwrites what came before it, as in torch.
    The schedulers must drive ``optimizer``; their construction steps stay (as in torch).

    Args:
        optimizer: The optimizer every scheduler drives.
        schedulers: The schedulers, stepped in this order.

    Raises:
        ValueError: no scheduler, or a scheduler driving another optimizer or stepping on a
            metric.
    """

    def __init__(self, optimizer: Any, schedulers: Sequence[NumpyScheduler]) -> None:
        _check_children(optimizer, schedulers, "chain")
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = self.group_lrs()

    def step(self) -> None:
        """Step every scheduler in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = self.group_lrs()
