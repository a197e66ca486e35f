"""SAM: sharpness-aware minimization around any optimizer (and ASAM, its adaptive form).

Seeks parameters whose whole neighbourhood has a low loss (flat minima), which generalize
better: each step first climbs to the worst point within distance ``rho`` (to first order),
takes the gradient there, returns, and lets the base optimizer step with that gradient. Costs
two forward/backward passes per step; used for image classification (ViTs, ResNets, label
noise) and fine-tuning. ``adaptive=True`` is ASAM (scale-invariant neighbourhood, use a
larger ``rho``, e.g. 0.5 to 2)::

    {"name": "sam", "base": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "rho": 0.05}

    g = grad L(p);   n = ||(|p| if adaptive else 1) * g||_2 over all parameters of all groups
    e = rho_group (p^2 if adaptive else 1) * g / (n + eps);   g_sam = grad L(p + e)
    base step from p with g_sam

Driven by a closure, evaluated twice per ``step``:

- torch: ``opt.step(closure)``, the closure zeroes the grads, computes the loss, calls
  ``backward()`` and returns the loss (as for ``torch.optim.LBFGS``).
- NumPy: ``opt.step(closure)``, the closure returns ``(loss, grads)`` at the current parameter
  values, ``grads`` a ``{name: array}`` dict or a list aligned with the parameters (a missing or
  ``None`` gradient: the parameter is neither perturbed nor stepped).

``step`` returns the loss at the unperturbed parameters. ``optiplug run`` and ``compare`` train
with it: the loop hands it a closure over the current batch (the first call returns the
gradients the loop just computed). A group may set its own ``rho`` (a ``"rho"`` key in a
param-group dict given as ``params``). With ``nonfinite`` set, a non-finite gradient at either
point skips the whole step (the parameters are restored).

Conventions that differ from pytorch_optimizer's ``SAM`` (4.1): its ``step(closure)`` expects
the first gradients already computed and calls the closure once; here ``step`` evaluates the
closure for both (as torch's closure-taking optimizers do), which gives the same numbers as its
``first_step``/``second_step`` pair. It sums the squared norms in float32 even for float64
parameters; optiplug uses the parameters' dtype. The base optimizer is any registered one,
built from config, rather than a class and keyword arguments.

Reference: Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently
Improving Generalization", ICLR 2021 (arXiv:2010.01412), Algorithm 1; Kwon et al., "ASAM",
ICML 2021 (arXiv:2102.11600).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NonfiniteGradientError
from optiplug.plugins.optimizers.wrapping import NumpyWrapper, WrapperSpec, build_base

Array = NDArray[Any]


class SamSpec(WrapperSpec):
    """SAM around any registered optimizer (the paper's default radius)."""

    closure_driven: ClassVar[bool] = True
    loop_closure: ClassVar[bool] = True
    """The training loop can drive it: it passes a closure over the current batch."""

    name: Literal["sam"] = "sam"
    rho: optiplug.PositiveFloat = 0.05
    """Radius of the neighbourhood the perturbation climbs to (a group's ``"rho"`` overrides
    it for that group)."""
    adaptive: bool = False
    """ASAM: scale the neighbourhood by ``|p|`` per entry (scale-invariant; use a larger
    ``rho``)."""
    eps: optiplug.PositiveFloat = 1e-12
    """Added to the gradient norm before dividing by it."""


class NumpySam(NumpyWrapper):
    """SAM on NumPy arrays around a NumPy optimizer; ``step(closure)``."""

    requires_closure = True

    def step(self, grads: Any = None) -> Any:
        """Perturb, re-evaluate the closure, restore, then step the base optimizer.

        Args:
            grads: The closure: ``closure()`` returns ``(loss, grads)`` at the current
                parameters.

        Returns:
            The loss at the unperturbed parameters.

        Raises:
            TypeError: no closure.
            RuntimeError: in evaluation mode.
            NonfiniteGradientError: a gradient is not finite and ``nonfinite="raise"``.
        """
        if self.evaluating:
            raise RuntimeError("NumpySam is in evaluation mode: call train() before step()")
        args: tuple[Any, ...] = (grads,) if grads is not None else ()
        kwargs: dict[str, Any] = {}
        for hook in list(self._pre_hooks.values()):
            result = hook(self, args, kwargs)
            if result is not None:
                args, kwargs = result
        closure = kwargs.get("grads", args[0] if args else None)
        if not callable(closure):
            raise TypeError(f"{type(self).__name__}.step() needs a closure that returns "
                            f"(loss, grads), got {type(closure).__name__}")
        loss = self._sam_step(closure)
        for hook in list(self._post_hooks.values()):
            hook(self, (closure,), {})
        return loss

    def _named_grads(self, grads: Any) -> dict[str, Array | None]:
        pairs = self._wrapped_pairs()
        if isinstance(grads, Mapping):
            unknown = set(grads) - {name for name, _ in pairs}
            if unknown:
                raise ValueError(f"the closure gave gradients for unknown parameters: "
                                 f"{sorted(unknown)}")
            named = {name: grads.get(name) for name, _ in pairs}
        else:
            grads = list(grads)
            if len(grads) != len(pairs):
                raise ValueError(f"the closure gave {len(grads)} gradients for "
                                 f"{len(pairs)} parameters")
            named = {name: grad for (name, _), grad in zip(pairs, grads, strict=True)}
        for (name, param) in pairs:
            grad = named[name]
            if grad is not None:
                grad = np.asarray(grad)
                if grad.shape != param.shape:
                    raise ValueError(f"gradient of {name!r} has shape {grad.shape}, the "
                                     f"parameter {param.shape}")
                named[name] = grad
        return named

    def _finite(self, grads: Mapping[str, Array | None]) -> bool:
        policy = self.base.nonfinite
        if policy == "ignore":
            return True
        for name, grad in grads.items():
            if grad is not None and not np.isfinite(grad).all():
                if policy == "raise":
                    raise NonfiniteGradientError(f"gradient of parameter {name!r} is not "
                                                 f"finite (NaN or infinity); nothing was "
                                                 f"updated")
                return False
        return True

    def _sam_step(self, closure: Callable[[], Any]) -> Any:
        loss, first = closure()
        grads = self._named_grads(first)
        if not self._finite(grads):
            self.skipped_steps += 1
            self.base.skipped_steps += 1
            return loss
        total = 0.0
        for group in self.param_groups:
            adaptive = self.options["adaptive"]
            for name, param in zip(group["param_names"], group["params"], strict=True):
                grad = grads[name]
                if grad is not None:
                    scaled = np.abs(param) * grad if adaptive else grad
                    total += float(np.vdot(scaled, scaled))
        norm = math.sqrt(total) + self.options["eps"]
        saved: dict[str, Array] = {}
        for index, group in enumerate(self.param_groups):
            scale = group_rho(self.options, index) / norm
            for name, param in zip(group["param_names"], group["params"], strict=True):
                grad = grads[name]
                if grad is None:
                    continue
                saved[name] = param.copy()
                step = param * param * grad if self.options["adaptive"] else grad.copy()
                np.multiply(step, param.dtype.type(scale), out=step, casting="unsafe")
                np.add(param, step, out=param, casting="unsafe")
        try:
            _, second = closure()
            perturbed = self._named_grads(second)
        finally:
            for group in self.param_groups:
                for name, param in zip(group["param_names"], group["params"], strict=True):
                    if name in saved:
                        np.copyto(param, saved[name])
        skipped = self.base.skipped_steps
        try:
            self.base.step(perturbed)
        finally:
            self.skipped_steps = self.base.skipped_steps
        if self.base.skipped_steps == skipped:
            self.steps += 1
        return loss


def group_rhos(params: Any) -> tuple[Any, list[float | None]]:
    """``params`` without the ``"rho"`` keys of its param-group dicts (the base optimizer does
    not know them), and each group's ``rho`` (``None``: the spec's).

    Raises:
        ValueError: a group's ``rho`` is not a positive number.
    """
    if not isinstance(params, (list, tuple)) or not all(
            isinstance(group, Mapping) and "params" in group for group in params):
        return params, []
    rhos: list[float | None] = []
    for index, group in enumerate(params):
        rho = group.get("rho")
        if rho is not None and (isinstance(rho, bool) or not isinstance(rho, (int, float))
                                or not rho > 0 or not math.isfinite(rho)):
            raise ValueError(f"Invalid rho in param group {index}: {rho!r} (a positive number)")
        rhos.append(None if rho is None else float(rho))
    return [{key: value for key, value in group.items() if key != "rho"}
            for group in params], rhos


def group_rho(options: Mapping[str, Any], index: int) -> float:
    """The ``rho`` of param group ``index``: its own, else the spec's."""
    rhos = options["group_rho"]
    rho = rhos[index] if index < len(rhos) else None
    return float(options["rho"] if rho is None else rho)


def _options(spec: SamSpec, rhos: list[float | None]) -> dict[str, Any]:
    return {"rho": spec.rho, "adaptive": spec.adaptive, "eps": spec.eps, "group_rho": rhos}


def build_numpy(spec: SamSpec, params: Any) -> NumpySam:
    params, rhos = group_rhos(params)
    return NumpySam(build_base(spec, "numpy", params), _options(spec, rhos))


def build_torch(spec: SamSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.catalogue_torch import Sam

    params, rhos = group_rhos(params)
    return Sam(build_base(spec, "torch", params), _options(spec, rhos), spec.nonfinite)


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="sam", spec=SamSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Wraps any optimizer: steps with the gradient at the worst nearby point "
                "(radius rho, ASAM with adaptive) for flatter minima; two passes per step.",
        reference="Foret et al. 2021, arXiv:2010.01412")]
