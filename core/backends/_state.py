"""Optimizer state across backends: a NumPy optimizer's state dict for torch, and back.

Both backends keep the same per-parameter state under the same keys (``exp_avg``,
``momentum_buffer``, ...: the NumPy optimizers follow torch step for step); what differs is the
container. NumPy state is keyed by parameter name and holds arrays and an integer ``step``;
torch state is keyed by position (with ``param_names`` in each group) and holds tensors, with
``step`` a scalar tensor where the torch class keeps one. :func:`convert_state` maps one onto
the other for a given target optimizer, which then checks the result as it checks any state
dict (same technique, same parameters and shapes, same algorithm flags).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Final

from ..errors import ConfigError

__all__ = ["convert_state"]

# torch's implementation switches: never carried to NumPy, and on torch the target's own.
_TORCH_ONLY: Final = frozenset({"foreach", "fused", "capturable", "differentiable"})


def convert_state(state_dict: Mapping[str, Any], to: Any) -> dict[str, Any]:
    """``state_dict`` of one backend's optimizer, in the format of optimizer ``to``.

    Build the same technique on the other backend over the same parameters (same names),
    convert, load::

        numpy_opt = optiplug.optimizer("adam", numpy_params, lr=1e-3)
        ...                                  # train on NumPy
        torch_opt = optiplug.optimizer("adam", model.named_parameters(), lr=1e-3)
        torch_opt.load_state_dict(optiplug.convert_state(numpy_opt.state_dict(), to=torch_opt))

    Per-parameter state is matched by name (torch state without ``param_names`` by position)
    and copied, never shared. Group hyperparameters come from ``state_dict`` (a scheduled
    ``lr`` carries over); settings only one backend has come from ``to`` (torch's kernel
    choice, and the flag a torch class uses for the technique, such as ``nesterov``). A
    state already in ``to``'s format is returned as a copy.

    Args:
        state_dict: What ``state_dict()`` of a NumPy or a torch optiplug optimizer returned
            (plain ``torch.optim`` state dicts work too).
        to: The optimizer that will load the result (a NumPy or torch optimizer).

    Returns:
        A state dict for ``to.load_state_dict``.

    Raises:
        ConfigError: ``state_dict`` is not a state dict, is another technique's state, or its
            parameters differ in number from ``to``'s when names are missing.
    """
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        raise ConfigError("cannot convert optimizer state: expected a dict with 'state' and "
                          "'param_groups' (from state_dict())")
    saved = state_dict.get("technique")
    own = getattr(to, "optiplug_technique", None)
    if None not in (saved, own) and saved != own:
        raise ConfigError(f"cannot convert optimizer state: it is the state of optimizer "
                          f"{saved!r}, not of {own!r}")
    torch = sys.modules.get("torch")
    to_torch = torch is not None and isinstance(to, torch.optim.Optimizer)
    groups = state_dict["param_groups"]
    from_torch = any(isinstance(group, Mapping) and "params" in group for group in groups)
    if from_torch == to_torch:
        return _copy(state_dict)
    if to_torch:
        return _numpy_to_torch(state_dict, to)
    return _torch_to_numpy(state_dict, to)


def _copy(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(dict(state_dict))


def _target_groups(to: Any) -> list[tuple[list[str], dict[str, Any]]]:
    """``(param_names, settings)`` of each of ``to``'s groups."""
    out = []
    for index, group in enumerate(to.param_groups):
        names = group.get("param_names")
        if names is None:
            names = [str(i) for i in range(sum(len(g["params"]) for g in to.param_groups[:index]),
                                           sum(len(g["params"]) for g in
                                               to.param_groups[:index + 1]))]
        out.append((list(names), {k: v for k, v in group.items()
                                  if k not in ("params", "param_names")}))
    return out


def _settings(saved: Mapping[str, Any], names: list[str],
              targets: list[tuple[list[str], dict[str, Any]]], keep_target_only: bool
              ) -> dict[str, Any]:
    """A group's settings: the saved values, completed with the target group's own."""
    target = next((settings for own_names, settings in targets
                   if names and names[0] in own_names), {})
    group = {key: value for key, value in saved.items()
             if key not in ("params", "param_names") and key not in _TORCH_ONLY
             and (key in target or not target or keep_target_only)}
    if keep_target_only:
        for key, value in target.items():
            group.setdefault(key, value)
        for key in _TORCH_ONLY & set(target):
            group[key] = target[key]
    return group


def _numpy_to_torch(state_dict: Mapping[str, Any], to: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    targets = _target_groups(to)
    scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    keeps_step = getattr(to, "step_in_state", True)
    groups: list[dict[str, Any]] = []
    state: dict[int, dict[str, Any]] = {}
    position = 0
    for saved in state_dict["param_groups"]:
        names = [str(name) for name in saved.get("param_names", [])]
        group = _settings(saved, names, targets, keep_target_only=True)
        group["params"] = list(range(position, position + len(names)))
        group["param_names"] = names
        for name, index in zip(names, group["params"], strict=True):
            entry = state_dict["state"].get(name)
            if entry is None:
                continue
            state[index] = {
                key: (torch.tensor(float(value), dtype=scalar) if key == "step" else
                      torch.tensor(np.array(value, copy=True)) if isinstance(value, np.ndarray)
                      else value)
                for key, value in entry.items() if key != "step" or keeps_step}
        position += len(names)
        groups.append(group)
    converted: dict[str, Any] = {"state": state, "param_groups": groups}
    if "technique" in state_dict:
        converted["technique"] = state_dict["technique"]
    return converted


def _torch_to_numpy(state_dict: Mapping[str, Any], to: Any) -> dict[str, Any]:
    targets = _target_groups(to)
    own_names = [name for names, _ in targets for name in names]
    saved_groups = list(state_dict["param_groups"])
    if not all("param_names" in group for group in saved_groups):
        count = sum(len(group["params"]) for group in saved_groups)
        if count != len(own_names):
            raise ConfigError(f"cannot convert optimizer state: it has {count} parameters "
                              f"without names, the optimizer {len(own_names)}")
        named_by_position = iter(own_names)
        saved_groups = [dict(group, param_names=[next(named_by_position)
                                                 for _ in group["params"]])
                        for group in saved_groups]
    groups: list[dict[str, Any]] = []
    state: dict[str, dict[str, Any]] = {}
    for saved in saved_groups:
        names = [str(name) for name in saved["param_names"]]
        group = _settings(saved, names, targets, keep_target_only=False)
        group["param_names"] = names
        groups.append(group)
        for name, index in zip(names, saved["params"], strict=True):
            entry = state_dict["state"].get(index)
            if entry is None:
                continue
            converted = {key: (value.detach().cpu().numpy().copy()
                               if hasattr(value, "detach") and key != "step" else value)
                         for key, value in entry.items()}
            # torch keeps step as a scalar tensor, and SGD keeps none (a state means it has
            # stepped at least once, all the NumPy kernels need to know).
            step = converted.get("step", 1)
            converted["step"] = int(step.item() if hasattr(step, "item") else step)
            state[name] = converted
    converted_dict: dict[str, Any] = {"optimizer": type(to).__qualname__, "state": state,
                                      "param_groups": groups}
    if "technique" in state_dict:
        converted_dict["technique"] = state_dict["technique"]
    return converted_dict
