"""The plugin contract: every hook optiplug calls, with when it is called and what it returns.

A plugin is a module (or object) registered under the entry-point group ``optiplug.plugins``
that implements some of these hooks, each decorated with :data:`optiplug.hookimpl`::

    # pyproject.toml
    [project.entry-points."optiplug.plugins"]
    "optimizer.lion" = "my_package.lion"

    # my_package/lion.py
    import optiplug

    @optiplug.hookimpl
    def optiplug_optimizers() -> list[optiplug.Technique]:
        return [optiplug.Technique(kind="optimizer", name="lion", spec=LionSpec,
                                   builders={"numpy": build_numpy, "torch": build_torch},
                                   summary="Sign-based momentum optimizer ...")]

Contribution hooks (``optiplug_<kind>s`` and ``optiplug_backends``) are called once per plugin
when the registry first needs them; each returns a list of descriptors. A plugin that raises or
returns anything else is recorded as broken and contributes nothing.

Lifecycle hooks are called on live objects. When no plugin implements one, optiplug does not
call it at all (it is checked once when an object is built, never per step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import pluggy

if TYPE_CHECKING:
    from .specs import Spec
    from .technique import Backend, Technique

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT: Final = "optiplug"
hookspec: Final = pluggy.HookspecMarker(PROJECT)
hookimpl: Final = pluggy.HookimplMarker(PROJECT)
"""Decorator marking a plugin's hook implementations (``@optiplug.hookimpl``)."""


@hookspec
def optiplug_optimizers() -> list[Technique]:
    """Contribute optimizer techniques.

    **The builder contract.** A builder is called as ``builder(spec, params=params)`` with the
    validated spec, and returns the optimizer: a ``torch.optim.Optimizer`` for the torch
    backend, an :class:`optiplug.backends.numpy.NumpyOptimizer` (or an object with its
    ``step``/``zero_grad``/``state_dict``/``load_state_dict``/``param_groups``) for NumPy.

    What a *user* may pass as params (to ``optiplug.optimizer``, ``optiplug.build`` or a
    recipe), per backend:

    =========================  ===============================  ===============================
    form                       torch                            NumPy
    =========================  ===============================  ===============================
    one parameter              a tensor / ``nn.Parameter``      an ``ndarray``
    a list of them             ``model.parameters()``           ``[w, b]``
    named                      ``model.named_parameters()``,    ``{name: array}``,
                               ``{name: tensor}``, pairs        ``(name, array)`` pairs
    a model                    an ``nn.Module``                 a NumPy layer or model (an
                                                                object with ``params`` and
                                                                ``grads`` dicts, or with
                                                                ``named_parameters()``)
    param groups               ``[{"params": <any form above>, "lr": ..., ...}, ...]``,
                               optionally with ``param_names``
    rules applied              what ``optiplug.param_groups(params, rules)`` returns
    =========================  ===============================  ===============================

    What a *builder* receives is always the normalized form, whatever the user passed: a
    :class:`optiplug.param_groups.ParamGroupList`, a list of param-group dicts
    ``{"params": [(name, param), ...], <setting>: ...}`` (groups keep the settings the user
    gave). Names are kept as the user gave them: when any parameter is named, every one is
    (the unnamed ones by position, ``"0"``, ``"1"``, ...); when none is, ``params`` holds the
    bare parameters, as torch keeps them (state by position). Never an ``nn.Module``, a NumPy
    layer or a generator. Both ``torch.optim.Optimizer`` (named params are torch's own
    format) and :class:`~optiplug.backends.numpy.NumpyOptimizer` (which names bare arrays by
    position) take it as it is; a NumPy layer's ``grads`` dict rides along as
    ``params.grads``. ``spec.group_params(params)`` applies the spec's ``param_groups`` rules,
    the default no weight decay on biases and normalization weights and ``layer_decay`` to it
    and returns the same form (named). ``spec.optimizer_arguments()`` holds the gradient
    clipping options when they are set (``clip_grad_norm``, ``clip_grad_norm_type``,
    ``clip_grad_value``): pass them on to the base class (``NumpyOptimizer`` or
    ``TorchOptimizer``, which clip before every step), as ``**options`` do.

    The normalization is :func:`optiplug.param_groups.normalize_params`; ``optiplug.build``
    (so the API, config files and the training loop) calls it before every builder, and the
    torch base class :class:`optiplug.backends.torch.TorchOptimizer` calls it in ``__init__``
    and ``add_param_group``, so an optimizer class used directly accepts every form too. It
    refuses, with a :class:`~optiplug.ConfigError` naming the parameter: the same parameter
    listed twice, and for torch integer/boolean or ``meta`` tensors.

    Returns:
        A list of :class:`optiplug.Technique` with ``kind="optimizer"``.
    """
    raise NotImplementedError


@hookspec
def optiplug_initializers() -> list[Technique]:
    """Contribute weight-initializer techniques.

    Returns:
        A list of :class:`optiplug.Technique` with ``kind="initializer"``. The NumPy builder
        receives ``(spec)`` and returns ``fill(shape, *, dtype, rng) -> ndarray``; the torch
        builder returns ``fill(tensor, *, generator) -> tensor`` that fills in place without
        recording autograd. An initializer defined only for some ranks (``eye``: 2-D,
        ``dirac``: 3-D to 5-D) raises ``ValueError`` for the others, on both backends, and its
        ``expected_variance(shape)`` returns ``None`` for them.
    """
    raise NotImplementedError


@hookspec
def optiplug_activations() -> list[Technique]:
    """Contribute activation techniques.

    Returns:
        A list of :class:`optiplug.Technique` with ``kind="activation"``. Builders receive
        ``(spec)``; torch returns an ``nn.Module``, NumPy an object with ``forward`` and
        ``backward``. An activation whose output shape differs from its input's (gated units
        halve an axis) says so with ``spec.output_shape(input_shape) -> tuple``; learnable
        parameters (PReLU's slope) live in the NumPy module's ``params``/``grads``.
    """
    raise NotImplementedError


@hookspec
def optiplug_normalizers() -> list[Technique]:
    """Contribute normalizer techniques (data scalers and normalization layers).

    Returns:
        A list of :class:`optiplug.Technique` with ``kind="normalizer"``. Builders receive
        ``(spec)`` plus layer arguments such as ``num_features``.
    """
    raise NotImplementedError


@hookspec
def optiplug_schedulers() -> list[Technique]:
    """Contribute learning-rate scheduler techniques.

    Returns:
        A list of :class:`optiplug.Technique` with ``kind="scheduler"``. Builders receive
        ``(spec, optimizer=...)``; torch returns a ``torch.optim.lr_scheduler.LRScheduler``.
    """
    raise NotImplementedError


@hookspec
def optiplug_backends() -> list[Backend]:
    """Contribute array backends (optiplug's own ``numpy`` and ``torch`` come this way too).

    Returns:
        A list of :class:`optiplug.Backend`.
    """
    raise NotImplementedError


@hookspec
def optiplug_built(technique: Technique, spec: Spec, backend: str, obj: Any) -> None:
    """Called after any technique object is built (by ``optiplug.build`` and friends).

    Args:
        technique: The descriptor that built it.
        spec: The validated spec.
        backend: The backend name it was built for.
        obj: The live object (an optimizer, module, scheduler, fill function, ...).
    """


@hookspec
def optiplug_before_step(optimizer: Any, backend: str) -> None:
    """Called before every ``step()`` of every optimizer built while this hook is implemented.

    A plugin may observe or adjust the optimizer here (read or change ``param_groups``, read
    gradients). Attached when the optimizer is built: implementations registered later apply
    to optimizers built later.
    """


@hookspec
def optiplug_after_step(optimizer: Any, backend: str) -> None:
    """Called after every ``step()`` of every optimizer built while this hook is implemented."""
