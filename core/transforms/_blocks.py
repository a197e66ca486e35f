"""The building blocks shipped with optiplug, each a few lines of kernel against ``xp``.

Every block is a frozen pydantic model (its hyperparameters, validated and documented) with a
lower-case factory function of the same name, in the style of optax::

    chain(clip_by_global_norm(1.0), scale_by_adam(), add_decayed_weights(0.01),
          scale_by_learning_rate())
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field

from ..specs import Beta, NonNegativeFloat, PositiveFloat
from ._base import (
    ArrayOps,
    Arrays,
    Chain,
    ChainLike,
    PerTensorTransform,
    ScalarTransform,
    StepContext,
    Transform,
    as_chain,
    register_transform,
)

__all__ = ["AddDecayedWeights", "Clip", "ClipByGlobalNorm", "ClipByTensorNorm", "Scale",
           "ScaleByAdam", "ScaleByLearningRate", "ScaleByMomentum", "ScaleByRms",
           "ScaleByTrustRatio", "add_decayed_weights", "chain", "clip", "clip_by_global_norm",
           "clip_by_tensor_norm", "scale", "scale_by_adam", "scale_by_learning_rate",
           "scale_by_momentum", "scale_by_rms", "scale_by_trust_ratio"]


@register_transform
class ScaleByAdam(Transform):
    """Adam's preconditioning: ``u = m_hat / (sqrt(v_hat) + eps)``.

    ``m = b1 m + (1 - b1) u``, ``v = b2 v + (1 - b2) u^2``, ``m_hat = m / (1 - b1^t)``,
    ``v_hat = v / (1 - b2^t)``. Computed as ``m / (sqrt(v) + eps sqrt(1 - b2^t))`` with the
    factor ``sqrt(1 - b2^t) / (1 - b1^t)`` deferred, which is the same number with one pass
    less (torch's Adam does the same).

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    name: Literal["scale_by_adam"] = "scale_by_adam"
    b1: Beta = 0.9
    """Decay rate of the first-moment average."""
    b2: Beta = 0.999
    """Decay rate of the second-moment average."""
    eps: PositiveFloat = 1e-8
    """Added to the denominator ``sqrt(v_hat)`` for numerical stability."""

    state_names = ("mu", "nu")

    def update(self, xp: ArrayOps, u: Arrays, state: Sequence[Arrays],
               ctx: StepContext) -> Arrays:
        mu, nu = state
        xp.lerp_(mu, u, 1 - self.b1)
        xp.mul_(nu, self.b2)
        xp.addcmul_(nu, u, u, 1 - self.b2)
        bias_correction2_sqrt = math.sqrt(1 - self.b2**ctx.step)
        denom = xp.sqrt(nu)
        xp.add_(denom, self.eps * bias_correction2_sqrt)
        ctx.scale = bias_correction2_sqrt / (1 - self.b1**ctx.step)
        return xp.ratio(mu, denom)


@register_transform
class ScaleByMomentum(Transform):
    """Heavy-ball momentum as in SGD: ``mu = momentum * mu + (1 - dampening) * u``.

    Returns ``mu`` (or ``u + momentum * mu`` with ``nesterov``). The first step sets
    ``mu = u``, exactly as ``torch.optim.SGD`` does.

    Reference: Sutskever et al., "On the importance of initialization and momentum in deep
    learning", ICML 2013.
    """

    name: Literal["scale_by_momentum"] = "scale_by_momentum"
    momentum: Beta = 0.9
    """Decay rate of the velocity."""
    dampening: Beta = 0.0
    """Fraction of the incoming update left out of the velocity (after the first step)."""
    nesterov: bool = False
    """Use Nesterov's look-ahead: ``u + momentum * mu``."""

    state_names = ("mu",)

    def update(self, xp: ArrayOps, u: Arrays, state: Sequence[Arrays],
               ctx: StepContext) -> Arrays:
        (mu,) = state
        if ctx.step == 1:
            xp.copy_(mu, u)
        else:
            xp.mul_(mu, self.momentum)
            xp.add_(mu, u, alpha=1 - self.dampening)
        if self.nesterov:
            return xp.add(u, mu, alpha=self.momentum)
        return mu


@register_transform
class ScaleByRms(Transform):
    """RMSprop's preconditioning: ``nu = decay nu + (1 - decay) u^2``, ``u / (sqrt(nu) + eps)``.

    Reference: Tieleman & Hinton, Lecture 6.5 (RMSprop), COURSERA, 2012.
    """

    name: Literal["scale_by_rms"] = "scale_by_rms"
    decay: Beta = 0.99
    """Decay rate of the squared-update average (torch's ``alpha``)."""
    eps: PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""
    initial_scale: NonNegativeFloat = 0.0
    """Value the squared-update average starts at."""

    state_names = ("nu",)

    def initial_value(self, state_name: str) -> float:
        return self.initial_scale

    def update(self, xp: ArrayOps, u: Arrays, state: Sequence[Arrays],
               ctx: StepContext) -> Arrays:
        (nu,) = state
        xp.mul_(nu, self.decay)
        xp.addcmul_(nu, u, u, 1 - self.decay)
        denom = xp.sqrt(nu)
        xp.add_(denom, self.eps)
        return xp.ratio(u, denom)


@register_transform
class AddDecayedWeights(Transform):
    """Adds ``weight_decay * params`` to the update (decoupled weight decay when placed after
    a preconditioner such as ``scale_by_adam``, L2 regularization when placed first).

    A param group's ``weight_decay`` (set by a param-group rule) overrides this value for the
    group's parameters, so ``{role: bias, weight_decay: 0.0}`` exempts biases.

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    name: Literal["add_decayed_weights"] = "add_decayed_weights"
    weight_decay: NonNegativeFloat = 0.0
    """Coefficient of the parameters added to the update."""

    handles_scale = True

    def update(self, xp: ArrayOps, u: Arrays, state: Sequence[Arrays],
               ctx: StepContext) -> Arrays:
        override = ctx.group.get("weight_decay")
        weight_decay = self.weight_decay if override is None else float(override)
        if weight_decay == 0.0:
            return u
        if ctx.scale == 0.0:
            ctx.scale, ctx.params_coef = 1.0, weight_decay
            return xp.mul(ctx.params, 0.0)
        # scale (u + c p) + wd p == scale (u + (c + wd / scale) p): nothing is computed now.
        ctx.params_coef += weight_decay / ctx.scale
        return u


@register_transform
class Clip(Transform):
    """Clips every element of the update to ``[-max_delta, max_delta]``."""

    name: Literal["clip"] = "clip"
    max_delta: PositiveFloat
    """Largest magnitude an element of the update may have."""

    def update(self, xp: ArrayOps, u: Arrays, state: Sequence[Arrays],
               ctx: StepContext) -> Arrays:
        u = xp.writable(u)
        xp.clamp_(u, -self.max_delta, self.max_delta)
        return u


@register_transform
class ClipByGlobalNorm(ScalarTransform):
    """Rescales the update so its global L2 norm is at most ``max_norm``.

    ``u * max_norm / max(norm, max_norm)``, the norm taken over every parameter the chain
    updates (as optax and ``torch.nn.utils.clip_grad_norm_`` do).

    Reference: Pascanu et al., "On the difficulty of training recurrent neural networks",
    ICML 2013.
    """

    name: Literal["clip_by_global_norm"] = "clip_by_global_norm"
    max_norm: PositiveFloat
    """Largest global L2 norm the update may have."""

    needs_norm = True

    def factor(self, ctx: StepContext, norm: float) -> float:
        return 1.0 if norm <= self.max_norm else self.max_norm / norm


@register_transform
class ScaleByLearningRate(ScalarTransform):
    """Multiplies the update by ``-lr``, the param group's current learning rate.

    Reading ``lr`` from the group each step is what lets schedulers and per-group learning
    rates work.
    """

    name: Literal["scale_by_learning_rate"] = "scale_by_learning_rate"
    flip_sign: bool = True
    """Descend (``-lr``); ``False`` ascends (``+lr``)."""

    def factor(self, ctx: StepContext, norm: float) -> float:
        lr = float(ctx.group["lr"])
        return -lr if self.flip_sign else lr


@register_transform
class Scale(ScalarTransform):
    """Multiplies the update by a constant ``step_size``."""

    name: Literal["scale"] = "scale"
    step_size: Annotated[float, Field(allow_inf_nan=False)]
    """The factor (finite; negative to flip the sign)."""

    def factor(self, ctx: StepContext, norm: float) -> float:
        return self.step_size


@register_transform
class ScaleByTrustRatio(PerTensorTransform):
    """Per-tensor trust ratio (LAMB, LARS): ``u * c ||p|| / (||u|| + eps)`` for each tensor.

    Both norms are of the whole tensor, floored at ``min_norm``; where either is zero the
    ratio is 1 (a fresh zero-initialized layer still moves). After ``scale_by_adam`` and
    ``add_decayed_weights`` and before ``scale_by_learning_rate`` it makes LAMB.

    References: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes" (LAMB), ICLR 2020; You et al., "Large Batch Training of Convolutional Networks"
    (LARS), 2017.
    """

    name: Literal["scale_by_trust_ratio"] = "scale_by_trust_ratio"
    min_norm: NonNegativeFloat = 0.0
    """Floor of both norms."""
    trust_coefficient: PositiveFloat = 1.0
    """Multiplier ``c`` of the ratio (LARS' trust coefficient)."""
    eps: NonNegativeFloat = 0.0
    """Added to the update norm in the denominator."""

    def tensor_factor(self, ctx: StepContext, param_norm: float, update_norm: float) -> float:
        param_norm = max(param_norm, self.min_norm)
        update_norm = max(update_norm, self.min_norm)
        if param_norm == 0.0 or update_norm == 0.0:
            return 1.0
        return self.trust_coefficient * param_norm / (update_norm + self.eps)


@register_transform
class ClipByTensorNorm(PerTensorTransform):
    """Rescales each tensor's update so its L2 norm is at most ``max_norm``."""

    name: Literal["clip_by_tensor_norm"] = "clip_by_tensor_norm"
    max_norm: PositiveFloat
    """Largest L2 norm one tensor's update may have."""

    def tensor_factor(self, ctx: StepContext, param_norm: float, update_norm: float) -> float:
        return 1.0 if update_norm <= self.max_norm else self.max_norm / update_norm


def scale_by_trust_ratio(min_norm: float = 0.0, trust_coefficient: float = 1.0,
                         eps: float = 0.0) -> ScaleByTrustRatio:
    """Per-tensor trust ratio of LAMB and LARS (see :class:`ScaleByTrustRatio`)."""
    return ScaleByTrustRatio(min_norm=min_norm, trust_coefficient=trust_coefficient, eps=eps)


def clip_by_tensor_norm(max_norm: float) -> ClipByTensorNorm:
    """Per-tensor norm clipping (see :class:`ClipByTensorNorm`)."""
    return ClipByTensorNorm(max_norm=max_norm)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> ScaleByAdam:
    """Adam's bias-corrected moment ratio (see :class:`ScaleByAdam`)."""
    return ScaleByAdam(b1=b1, b2=b2, eps=eps)


def scale_by_momentum(momentum: float = 0.9, *, dampening: float = 0.0,
                      nesterov: bool = False) -> ScaleByMomentum:
    """SGD momentum (see :class:`ScaleByMomentum`)."""
    return ScaleByMomentum(momentum=momentum, dampening=dampening, nesterov=nesterov)


def scale_by_rms(decay: float = 0.99, eps: float = 1e-8,
                 initial_scale: float = 0.0) -> ScaleByRms:
    """RMSprop's root-mean-square preconditioning (see :class:`ScaleByRms`)."""
    return ScaleByRms(decay=decay, eps=eps, initial_scale=initial_scale)


def add_decayed_weights(weight_decay: float = 0.0) -> AddDecayedWeights:
    """Adds ``weight_decay * params`` (see :class:`AddDecayedWeights`)."""
    return AddDecayedWeights(weight_decay=weight_decay)


def clip(max_delta: float) -> Clip:
    """Elementwise clipping to ``[-max_delta, max_delta]``."""
    return Clip(max_delta=max_delta)


def clip_by_global_norm(max_norm: float) -> ClipByGlobalNorm:
    """Global-norm clipping (see :class:`ClipByGlobalNorm`)."""
    return ClipByGlobalNorm(max_norm=max_norm)


def scale_by_learning_rate(*, flip_sign: bool = True) -> ScaleByLearningRate:
    """Multiplies by ``-lr`` of the param group (see :class:`ScaleByLearningRate`)."""
    return ScaleByLearningRate(flip_sign=flip_sign)


def scale(step_size: float) -> Scale:
    """Multiplies by a constant."""
    return Scale(step_size=step_size)


def chain(*transforms: ChainLike) -> Chain:
    """Transforms applied in order (nested chains are flattened)."""
    result = Chain([])
    for item in transforms:
        result = result | as_chain(item)
    return result
