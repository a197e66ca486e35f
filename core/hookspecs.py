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

    Returns:
        A list of :class:`optiplug.Technique` with ``kind="optimizer"``. Builders receive
        ``(spec, params=...)`` and return an optimizer: a ``torch.optim.Optimizer`` for the
        torch backend, an :class:`optiplug.backends.numpy.NumpyOptimizer` for NumPy.
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
